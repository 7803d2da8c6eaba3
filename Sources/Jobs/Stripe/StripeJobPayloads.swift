/// The payloads of the jobs that act on Stripe, as other services enqueue them. Each names its target by
/// id, or by the Clerk user whose subscription or customer the billing model knows.

/// When a change takes effect: `now`, or when the current period ends.
enum EffectiveTime: String, Codable, Sendable {
    case now
    case periodEnd = "period_end"

    init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        let text = try container.decode(String.self)
        guard let value = EffectiveTime(rawValue: text) else {
            throw DecodingError.dataCorruptedError(
                in: container, debugDescription: "must be now or period_end, got \(text.prefix(40))")
        }
        self = value
    }
}

/// `stripe.change_plan`: `{"subscription_id" | "user_id", "price", "proration_behavior"?, "at"?}`.
struct ChangePlanPayload: Codable, Sendable {
    var subscriptionID: NonEmptyString?
    var userID: NonEmptyString?
    var price: NonEmptyString
    var prorationBehavior: NonEmptyString?
    var at: EffectiveTime?

    enum CodingKeys: String, CodingKey {
        case subscriptionID = "subscription_id", userID = "user_id", price
        case prorationBehavior = "proration_behavior", at
    }
}

/// `stripe.cancel_subscription`: `{"subscription_id" | "user_id", "at"?}`.
struct CancelSubscriptionPayload: Decodable, Sendable {
    var subscriptionID: NonEmptyString?
    var userID: NonEmptyString?
    var at: EffectiveTime?

    enum CodingKeys: String, CodingKey {
        case subscriptionID = "subscription_id", userID = "user_id", at
    }
}

/// `stripe.resume_subscription`: `{"subscription_id" | "user_id"}`.
struct ResumeSubscriptionPayload: Decodable, Sendable {
    var subscriptionID: NonEmptyString?
    var userID: NonEmptyString?

    enum CodingKeys: String, CodingKey {
        case subscriptionID = "subscription_id", userID = "user_id"
    }
}

/// `stripe.create_portal_session`: `{"customer_id" | "user_id", "return_url"}`.
struct PortalSessionPayload: Decodable, Sendable {
    var customerID: NonEmptyString?
    var userID: NonEmptyString?
    var returnURL: NonEmptyString

    enum CodingKeys: String, CodingKey {
        case customerID = "customer_id", userID = "user_id", returnURL = "return_url"
    }
}

/// `stripe.create_checkout_session`: `{"user_id", "price", "success_url", "cancel_url", "customer_id"?}`.
struct CheckoutSessionPayload: Decodable, Sendable {
    var userID: NonEmptyString
    var price: NonEmptyString
    var successURL: NonEmptyString
    var cancelURL: NonEmptyString
    var customerID: NonEmptyString?

    enum CodingKeys: String, CodingKey {
        case userID = "user_id", price, successURL = "success_url", cancelURL = "cancel_url"
        case customerID = "customer_id"
    }
}

/// `stripe.resync`: `{"customer_id"?}`; every customer without one.
public struct ResyncPayload: Codable, Sendable {
    public var customerID: NonEmptyString?

    public init(customerID: String?) {
        self.customerID = customerID.flatMap(NonEmptyString.init)
    }

    enum CodingKeys: String, CodingKey {
        case customerID = "customer_id"
    }
}

/// A `stripe.fetched_event` job's payload: an event Sluice listed from Stripe's API, in the shape the
/// receiver stores deliveries in (without signature headers: Sluice fetched it itself).
struct FetchedEventPayload: Encodable, Sendable {
    var source = "reconcile"
    var eventID: String
    var type: String?
    var body: String

    enum CodingKeys: String, CodingKey {
        case source, eventID = "event_id", type, body
    }
}
