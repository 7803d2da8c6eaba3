import Crypto
import Foundation
import Jobs
import PGQueue
import TestKit
import Testing

/// Business events written with the change that causes them (the outbox), on databases of their own.
@Suite("outbound events")
struct OutboundEventTests {
    let events = BillingEvents()

    /// The outbound events of a database, by type, in the order written.
    static func emitted(_ connection: PostgresConnection) throws -> [String] {
        try connection.query("SELECT type FROM sluice.outbound_events ORDER BY created_at, id", context: "events")
            .map { row throws(PostgresError) in try row.decode(String.self, at: 0) }
    }

    /// Created, payment failed twice, recovered, cancelled, with the customer linked to user_1.
    var lifecycle: [BillingEvents.Delivery] {
        let basic = events.price("price_basic", amount: 1000, lookupKey: "basic")
        return [
            events.stripe(
                "customer", "customer.created", at: 1,
                ["id": "cus_1", "object": "customer", "metadata": ["clerk_user_id": "user_1"]]),
            events.stripe(
                "created", "customer.subscription.created", at: 2, events.subscription(status: "active", price: basic)),
            events.stripe(
                "failed_1", "invoice.payment_failed", at: 3,
                events.invoice("in_1", status: "open", paid: 0, attempts: 1, nextAttemptMinute: 60)),
            events.stripe(
                "failed_2", "invoice.payment_failed", at: 4,
                events.invoice("in_1", status: "open", paid: 0, attempts: 2, nextAttemptMinute: 120)),
            events.stripe(
                "recovered", "invoice.paid", at: 5, events.invoice("in_1", status: "paid", paid: 2500, attempts: 3)),
            events.stripe(
                "deleted", "customer.subscription.deleted", at: 6, events.subscription(status: "canceled", price: basic)
            ),
        ]
    }

    @Test(
        "a lifecycle in any order, each event delivered twice, emits each business event once",
        arguments: [1, 2, 3, 4, 5] as [UInt64])
    func anyOrder(seed: UInt64) throws {
        let database = try TestDatabase()
        let connection = try database.connect()
        var generator = SeededGenerator(seed: seed)
        var deliveries = lifecycle + lifecycle
        deliveries.shuffle(using: &generator)
        for delivery in deliveries { try BillingEvents.apply(delivery, on: connection) }
        let types = try Self.emitted(connection).filter { $0 != "access.changed" }
        #expect(
            types.sorted() == [
                "payment.failed", "payment.failed", "payment.recovered", "subscription.activated",
                "subscription.canceled",
            ], "seed \(seed): \(types)")
        // However access moved on the way, the last access.changed the app heard says what is true now.
        let last = try connection.firstValue(
            """
            SELECT body::jsonb -> 'data' ->> 'has_access' FROM sluice.outbound_events
            WHERE type = 'access.changed' ORDER BY (body::jsonb -> 'data' ->> 'version')::int DESC LIMIT 1
            """)
        #expect(last == nil || last == "false", "seed \(seed)")
        #expect(
            try connection.firstValue("SELECT has_access::text FROM billing.access_snapshots WHERE user_id = 'user_1'")
                != "true")
        // Each body is what a delivery sends: id, type, occurred_at and data with the object's version.
        let failed = try #require(
            try connection.firstValue(
                "SELECT body FROM sluice.outbound_events WHERE type = 'payment.failed' ORDER BY body::jsonb -> 'data' ->> 'attempt_count' LIMIT 1"
            ))
        let body = try #require(try JSONSerialization.jsonObject(with: Data(failed.utf8)) as? [String: Any])
        let data = try #require(body["data"] as? [String: Any])
        #expect((body["id"] as? String)?.hasPrefix("evt_") == true && body["occurred_at"] is String)
        #expect(data["invoice_id"] as? String == "in_1" && data["attempt_count"] as? Int == 1)
        #expect(data["amount_due"] as? Int == 2500 && data["currency"] as? String == "usd")
        #expect(data["version"] as? Int != nil && data["next_payment_attempt"] is String)
        #expect(data["email"] == nil, "no personal data beyond the ids")
    }

    @Test("a checkout's link and its subscription applied at the same time still tell the app the user has access")
    func concurrentLinkAndSubscription() throws {
        let database = try TestDatabase()
        let basic = events.price("price_basic", amount: 1000, lookupKey: "basic")
        let checkout = events.stripe(
            "checkout", "checkout.session.completed", at: 1,
            [
                "id": "cs_1", "object": "checkout.session", "customer": "cus_1", "client_reference_id": "user_1",
                "mode": "subscription", "subscription": "sub_1",
            ])
        let created = events.stripe(
            "created", "customer.subscription.created", at: 2, events.subscription(status: "active", price: basic))
        let linked = DispatchSemaphore(value: 0)
        try onThreads(2) { worker in
            let connection = try database.connect()
            if worker == 0 {
                // The link, held uncommitted while the subscription's event is applied beside it.
                try connection.run(script: "BEGIN", context: "begin")
                try BillingEvents.apply(checkout, on: connection)
                linked.signal()
                Thread.sleep(forTimeInterval: 0.5)
                try connection.run(script: "COMMIT", context: "commit")
            } else {
                linked.wait()
                try BillingEvents.apply(created, on: connection)
            }
        }
        let connection = try database.connect()
        let granted = try connection.firstValue(
            "SELECT count(*)::text FROM sluice.outbound_events WHERE type = 'access.changed' "
                + "AND body::jsonb -> 'data' ->> 'user_id' = 'user_1' AND (body::jsonb -> 'data' ->> 'has_access')::boolean"
        )
        let emitted = try Self.emitted(connection)
        #expect(granted == "1", "\(emitted)")
    }

    @Test("an erased user's customer is told of nothing more; dead letters' errors that name them are cleared")
    func nothingAfterErasure() throws {
        let database = try TestDatabase()
        let connection = try database.connect()
        for delivery in lifecycle.prefix(2) { try BillingEvents.apply(delivery, on: connection) }
        try connection.run(
            script: "INSERT INTO sluice.dead_letters (id, queue, kind, payload, attempt, max_attempts, errors, reason, "
                + "created_at) VALUES (999, 'default', 'stripe.cancel_subscription', '{}', 1, 1, "
                + "'[{\"error\": \"user user_1 has no subscription\"}]', 'permanent_failure', now())",
            context: "a dead letter naming the user")
        try BillingEvents.apply(
            events.clerk("gone", "user.deleted", at: 9, ["id": "user_1", "object": "user", "deleted": true]),
            on: connection)
        #expect(try connection.firstValue("SELECT errors::text FROM sluice.dead_letters WHERE id = 999") == "[]")
        let before = try Self.emitted(connection).count
        for delivery in lifecycle.dropFirst(2) { try BillingEvents.apply(delivery, on: connection) }
        let after = try Self.emitted(connection)
        #expect(after.count == before, "\(after)")
    }

    @Test("an event of the other mode, or one whose transaction rolled back, emits nothing")
    func nothingUnapplied() throws {
        let database = try TestDatabase()
        let connection = try database.connect()
        let created = lifecycle[1]
        try connection.run(script: "BEGIN", context: "begin")
        try BillingEvents.apply(created, on: connection)
        #expect(try Self.emitted(connection).contains("subscription.activated"))
        try connection.run(script: "ROLLBACK", context: "rollback")
        #expect(try Self.emitted(connection).isEmpty)
        try connection.query(
            "SELECT billing.apply_stripe_event($1::jsonb, 'live')", [String(decoding: created.body, as: UTF8.self)],
            context: "a test-mode event in live mode")
        #expect(try Self.emitted(connection).isEmpty)
    }

    @Test("a plan change is subscription.updated with the old and new plan, price and amount")
    func planChange() throws {
        let database = try TestDatabase()
        let connection = try database.connect()
        let basic = events.price("price_basic", amount: 1000, lookupKey: "basic")
        let pro = events.price("price_pro", amount: 2500, lookupKey: "pro")
        var object = events.subscription(status: "active", price: pro)
        object["id"] = "sub_1"
        let event: [String: Any] = [
            "id": "evt_upgrade", "object": "event", "type": "customer.subscription.updated",
            "created": events.start + 60,
            "livemode": false,
            "data": [
                "object": object,
                "previous_attributes": ["items": ["data": [["id": "si_1", "price": basic, "quantity": 1]]]],
            ],
        ]
        try connection.query(
            "SELECT billing.apply_stripe_event($1::jsonb)",
            [String(decoding: try JSONSerialization.data(withJSONObject: event), as: UTF8.self)], context: "upgrade")
        let data = try #require(
            try connection.firstValue(
                "SELECT (body::jsonb -> 'data')::text FROM sluice.outbound_events WHERE type = 'subscription.updated'"))
        let fields = try #require(try JSONSerialization.jsonObject(with: Data(data.utf8)) as? [String: Any])
        let previous = fields["previous"] as? [String: Any]
        #expect(fields["plan"] as? String == "pro" && fields["amount"] as? Int == 2500, "\(data)")
        #expect(previous?["plan"] as? String == "basic" && previous?["amount"] as? Int == 1000, "\(data)")
    }

    @Test("usage crossing 80 % and 100 % of the limit emits each threshold once a period")
    func usageThresholds() throws {
        let database = try TestDatabase()
        let connection = try database.connect()
        try connection.run(
            script: """
                INSERT INTO billing.plan_limits VALUES ('free', 'exports', 10);
                INSERT INTO billing.users (id, version, rank) VALUES ('ada', 1, 1);
                """, context: "a limit")
        let store = BillingStore(connection)
        func use(_ quantity: Int64, _ key: String) throws {
            _ = try store.recordUsage(user: "ada", feature: "exports", quantity: quantity, idempotencyKey: key)
        }
        try use(7, "a")
        #expect(try Self.emitted(connection).isEmpty)
        try use(1, "b")
        try use(1, "b")
        try use(1, "c")
        try use(5, "d")
        try use(1, "e")
        let thresholds = try connection.query(
            "SELECT body::jsonb -> 'data' ->> 'threshold_percent' FROM sluice.outbound_events ORDER BY created_at",
            context: "thresholds"
        ).map { row throws(PostgresError) in try row.decode(String.self, at: 0) }
        #expect(thresholds == ["80", "100"])
    }

    @Test("a deleted user's outbound events are erased with them")
    func erasure() throws {
        let database = try TestDatabase()
        let connection = try database.connect()
        for delivery in lifecycle { try BillingEvents.apply(delivery, on: connection) }
        #expect(try Self.emitted(connection).count >= 5)
        try BillingEvents.apply(
            events.clerk("gone", "user.deleted", at: 9, ["id": "user_1", "object": "user", "deleted": true]),
            on: connection)
        #expect(
            try connection.firstValue(
                "SELECT count(*)::text FROM sluice.outbound_events WHERE body LIKE '%user_1%' OR body LIKE '%cus_1%'")
                == "0")
    }

    @Test("OutboundSigner signs the Standard Webhooks test vector; two secrets give two signatures")
    func signerVector() throws {
        let signer = try OutboundSigner(secrets: ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"])
        let signature = signer.signature(
            id: "msg_p5jXN8AQM9LWM0D4loKWxJek", timestamp: 1_614_265_330, body: Array(#"{"test": 2432232314}"#.utf8))
        #expect(signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
        let rotated = try OutboundSigner(secrets: [
            OutboundSigner.newSecret(), "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        ])
        let both = rotated.signature(
            id: "msg_p5jXN8AQM9LWM0D4loKWxJek", timestamp: 1_614_265_330, body: Array(#"{"test": 2432232314}"#.utf8))
        #expect(both.split(separator: " ").count == 2 && both.hasSuffix(signature))
        #expect(throws: OutboundSecretProblem.self) { try OutboundSigner(secrets: ["not-a-secret"]) }
    }
}
