/// A sender of webhooks: its route, and the job its deliveries become.
enum WebhookSource: String, Sendable, CaseIterable {
    case stripe
    case clerk

    /// Every delivery waits in this queue, so webhook handling can be given slots of its own.
    static let queue = "webhooks"

    /// `POST /webhooks/<source>`.
    var path: String { "/webhooks/\(rawValue)" }

    /// `stripe.event`, `clerk.event`.
    var jobKind: String { "\(rawValue).event" }

    /// `stripe:<event id>`, `clerk:<svix-id>`: a redelivery has the same key and is absorbed.
    func uniqueKey(_ eventID: String) -> String { "\(rawValue):\(eventID)" }

    /// The variable holding this source's signing secrets.
    var secretVariable: String {
        switch self {
        case .stripe: "STRIPE_WEBHOOK_SECRET"
        case .clerk: "CLERK_WEBHOOK_SECRET"
        }
    }
}
