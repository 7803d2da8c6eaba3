import Foundation
public import PGQueue

/// Builds Stripe and Clerk events for the billing tests, in the shapes Stripe and Clerk send: Stripe events
/// wrap an object in an envelope (`id`, `type`, `created`, `data.object`); subscriptions come in the
/// current shape (periods on the items) or the 2020 one (periods on the subscription), invoices name their
/// subscription under `parent.subscription_details` or `subscription`.
public struct BillingEvents {
    /// Seconds of the first event; every later event is a minute further on.
    public let start = 1_790_000_000

    public init() {}

    /// One delivery: the job kind and the payload the receiver would have stored.
    public struct Delivery: Sendable {
        public var name: String
        public var kind: String
        public var eventID: String
        public var body: [UInt8]

        public init(name: String, kind: String, eventID: String, body: [UInt8]) {
            self.name = name
            self.kind = kind
            self.eventID = eventID
            self.body = body
        }

        /// The job the receiver would have made: the raw body and its signature headers, signed with the
        /// test secrets (the job verifies them again).
        public var job: NewJob {
            var headers: [String: String] = [:]
            if kind == "stripe.event" {
                headers["stripe-signature"] = WebhookSigning.stripeHeader(body)
            } else {
                for (name, value) in WebhookSigning.svixHeaders(body, id: eventID) { headers[name] = value }
            }
            let payload: [String: Any] = [
                "event_id": eventID, "body": String(decoding: body, as: UTF8.self), "headers": headers,
            ]
            let text = String(decoding: try! JSONSerialization.data(withJSONObject: payload), as: UTF8.self)
            // The receiver's unique key: stripe:<event id>, clerk:<svix-id>.
            let source = kind == "stripe.event" ? "stripe" : "clerk"
            return NewJob(kind: kind, payload: text, queue: "webhooks", uniqueKey: "\(source):\(eventID)")
        }
    }

    public func stripe(_ name: String, _ type: String, at minute: Int, _ object: [String: Any]) -> Delivery {
        let event: [String: Any] = [
            "id": "evt_\(name)", "object": "event", "type": type, "created": start + minute * 60, "livemode": false,
            "api_version": "2025-03-31.basil", "data": ["object": object],
        ]
        return Delivery(name: name, kind: "stripe.event", eventID: "evt_\(name)", body: Self.json(event))
    }

    public func clerk(_ name: String, _ type: String, at minute: Int, _ data: [String: Any]) -> Delivery {
        let event: [String: Any] = [
            "object": "event", "type": type, "timestamp": (start + minute * 60) * 1000, "data": data,
            "instance_id": "ins_test",
        ]
        return Delivery(name: name, kind: "clerk.event", eventID: "msg_\(name)", body: Self.json(event))
    }

    public func user(_ id: String, email: String, first: String, last: String, updatedMinute: Int) -> [String: Any] {
        [
            "id": id, "object": "user", "first_name": first, "last_name": last,
            "primary_email_address_id": "idn_\(id)",
            "email_addresses": [
                ["id": "idn_other", "email_address": "old@example.com"], ["id": "idn_\(id)", "email_address": email],
            ],
            "created_at": start * 1000, "updated_at": (start + updatedMinute * 60) * 1000, "private_metadata": [:],
        ]
    }

    public func price(
        _ id: String, amount: Int, lookupKey: String, interval: String = "month", currency: String = "usd"
    )
        -> [String: Any]
    {
        [
            "id": id, "object": "price", "product": "prod_app", "currency": currency, "unit_amount": amount,
            "lookup_key": lookupKey, "active": true, "livemode": false, "recurring": ["interval": interval],
        ]
    }

    /// A subscription with one item; `legacy` puts the period on the subscription (API 2020) instead of the item.
    public func subscription(
        status: String, price: [String: Any], cancelAtPeriodEnd: Bool = false, periodMinute: Int = 0,
        legacy: Bool = false, id: String = "sub_1", customer: String = "cus_1", createdMinute: Int = 0
    ) -> [String: Any] {
        let periodStart = start + periodMinute * 60
        let periodEnd = periodStart + 30 * 86_400
        var item: [String: Any] = ["id": "si_1", "object": "subscription_item", "price": price, "quantity": 1]
        var object: [String: Any] = [
            "id": id, "object": "subscription", "customer": customer, "status": status,
            "currency": price["currency"] ?? "usd", "cancel_at_period_end": cancelAtPeriodEnd, "livemode": false,
            "created": start + createdMinute * 60, "pause_collection": NSNull(), "trial_start": NSNull(),
            "trial_end": NSNull(), "canceled_at": status == "canceled" ? periodEnd : NSNull(),
        ]
        if legacy {
            object["current_period_start"] = periodStart
            object["current_period_end"] = periodEnd
        } else {
            item["current_period_start"] = periodStart
            item["current_period_end"] = periodEnd
        }
        object["items"] = ["object": "list", "data": [item]]
        return object
    }

    public func invoice(
        _ id: String, status: String, paid: Int, attempts: Int, nextAttemptMinute: Int? = nil, legacy: Bool = false,
        subscription: String = "sub_1"
    ) -> [String: Any] {
        var object: [String: Any] = [
            "id": id, "object": "invoice", "customer": "cus_1", "status": status, "currency": "usd",
            "amount_due": 2500, "amount_paid": paid, "amount_remaining": 2500 - paid, "attempt_count": attempts,
            "next_payment_attempt": nextAttemptMinute.map { start + $0 * 60 } ?? NSNull(),
            "billing_reason": "subscription_cycle", "livemode": false,
        ]
        if legacy {
            object["subscription"] = subscription
        } else {
            object["parent"] = ["type": "subscription_details", "subscription_details": ["subscription": subscription]]
        }
        return object
    }

    /// Sign-up in Clerk, checkout, subscription, first invoice paid, upgrade, a failed payment and its
    /// recovery, cancellation at period end, and the end of the subscription: 16 events in order.
    public var lifecycle: [Delivery] {
        let basic = price("price_basic", amount: 1000, lookupKey: "basic")
        let pro = price("price_pro", amount: 2500, lookupKey: "pro")
        return [
            clerk(
                "signup", "user.created", at: 0,
                user("user_1", email: "ada@example.com", first: "Ada", last: "L", updatedMinute: 0)),
            stripe(
                "product", "product.created", at: 1,
                ["id": "prod_app", "object": "product", "name": "App", "active": true]),
            stripe("price_basic", "price.created", at: 1, basic),
            stripe("price_pro", "price.created", at: 2, pro),
            stripe(
                "customer", "customer.created", at: 3,
                [
                    "id": "cus_1", "object": "customer", "email": "ada@example.com",
                    "metadata": ["clerk_user_id": "user_1"],
                ]),
            stripe(
                "checkout", "checkout.session.completed", at: 4,
                [
                    "id": "cs_1", "object": "checkout.session", "customer": "cus_1", "client_reference_id": "user_1",
                    "mode": "subscription", "subscription": "sub_1",
                ]),
            stripe("sub_created", "customer.subscription.created", at: 5, subscription(status: "active", price: basic)),
            stripe("invoice_1_paid", "invoice.paid", at: 6, invoice("in_1", status: "paid", paid: 2500, attempts: 1)),
            stripe(
                "upgrade", "customer.subscription.updated", at: 7,
                subscription(status: "active", price: pro, legacy: true)),
            stripe(
                "invoice_2_failed", "invoice.payment_failed", at: 8,
                invoice("in_2", status: "open", paid: 0, attempts: 1, nextAttemptMinute: 8 + 3 * 24 * 60, legacy: true)),
            stripe("past_due", "customer.subscription.updated", at: 9, subscription(status: "past_due", price: pro)),
            stripe("invoice_2_paid", "invoice.paid", at: 10, invoice("in_2", status: "paid", paid: 2500, attempts: 2)),
            stripe("recovered", "customer.subscription.updated", at: 11, subscription(status: "active", price: pro)),
            stripe(
                "cancel_at_end", "customer.subscription.updated", at: 12,
                subscription(status: "active", price: pro, cancelAtPeriodEnd: true)),
            stripe(
                "ended", "customer.subscription.deleted", at: 13,
                subscription(status: "canceled", price: pro, cancelAtPeriodEnd: true)),
            clerk(
                "rename", "user.updated", at: 14,
                user("user_1", email: "ada@example.org", first: "Ada", last: "Lovelace", updatedMinute: 14)),
        ]
    }

    /// Applies a delivery straight through the billing functions, without the queue (for SQL-level tests).
    public static func apply(_ delivery: Delivery, on connection: PostgresConnection) throws {
        let body = String(decoding: delivery.body, as: UTF8.self)
        if delivery.kind == "stripe.event" {
            try connection.query("SELECT billing.apply_stripe_event($1::jsonb)", [body], context: "applying")
        } else {
            try connection.query(
                "SELECT billing.apply_clerk_event($1::jsonb, $2)", [body, delivery.eventID], context: "applying")
        }
    }

    public static func json(_ object: [String: Any]) -> [UInt8] {
        Array(try! JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]))
    }
}
