import Foundation
import Jobs
import PGQueue
import TestKit
import Testing

/// `billing.record_usage`, plan limits, entitlements and the analytics views, on a real PostgreSQL.
@Suite("usage, limits and analytics")
struct UsageTests {
    let events = BillingEvents()

    struct Answer: Equatable {
        var allowed: Bool
        var used: Int64
        var limit: Int64?
        var remaining: Int64?
        var plan: String
        var repeated: Bool
    }

    static func record(
        _ user: String, _ feature: String, _ quantity: Int, key: String, on connection: PostgresConnection
    ) throws -> Answer {
        let row = try connection.query(
            "SELECT allowed, used, limit_value, remaining, plan, repeated FROM billing.record_usage($1, $2, $3, $4)",
            [user, feature, quantity, key], context: "recording usage"
        ).single()
        return Answer(
            allowed: try row.decode(Bool.self, at: 0), used: try row.decode(Int64.self, at: 1),
            limit: try row.decode(Int64?.self, at: 2), remaining: try row.decode(Int64?.self, at: 3),
            plan: try row.decode(String.self, at: 4), repeated: try row.decode(Bool.self, at: 5))
    }

    /// A user on a plan: Clerk user, Stripe customer linked, active subscription to `price`.
    func subscribe(
        _ user: String, price: [String: Any], periodMinute: Int = 0, at minute: Int, on connection: PostgresConnection
    )
        throws
    {
        try BillingEvents.apply(
            events.clerk(
                "\(user)_signup_\(minute)", "user.created", at: minute,
                events.user(user, email: "\(user)@example.com", first: "U", last: "S", updatedMinute: minute)),
            on: connection)
        try BillingEvents.apply(
            events.stripe(
                "\(user)_customer_\(minute)", "customer.created", at: minute,
                ["id": "cus_\(user)", "object": "customer", "metadata": ["clerk_user_id": user]]),
            on: connection)
        try BillingEvents.apply(
            events.stripe(
                "\(user)_sub_\(minute)", "customer.subscription.updated", at: minute,
                events.subscription(
                    status: "active", price: price, periodMinute: periodMinute, id: "sub_\(user)",
                    customer: "cus_\(user)")),
            on: connection)
    }

    @Test("fifty threads racing for a user's last ten units: exactly ten succeed")
    func race() throws {
        let run = try HandlerRun()
        let setup = try run.connect()
        try setup.query("INSERT INTO billing.plan_limits VALUES ('free', 'api_calls', 100)", context: "limits")
        #expect(try Self.record("racer", "api_calls", 90, key: "warm-up", on: setup).allowed)
        let allowed = Box(0)
        try onThreads(50) { index in
            let connection = try run.connect()
            if try Self.record("racer", "api_calls", 1, key: "call-\(index)", on: connection).allowed {
                allowed.value.withLock { $0 += 1 }
            }
        }
        #expect(allowed.value.withLock { $0 } == 10)
        #expect(
            try setup.firstValue("SELECT used::text FROM billing.usage_counters WHERE user_id = 'racer'")
                == "100")
        #expect(
            try setup.firstValue("SELECT count(*)::text FROM billing.usage_events WHERE NOT allowed") == "40")
    }

    @Test("concurrent retries of one idempotency key count once and all get the first answer")
    func idempotency() throws {
        let run = try HandlerRun()
        try run.connect().query("INSERT INTO billing.plan_limits VALUES ('free', 'exports', 12)", context: "limits")
        let answers = Box<[Answer]>([])
        try onThreads(20) { _ in
            let answer = try Self.record("retrier", "exports", 5, key: "export-42", on: run.connect())
            answers.value.withLock { $0.append(answer) }
        }
        let all = answers.value.withLock { $0 }
        #expect(all.filter { !$0.repeated }.count == 1)
        #expect(Set(all.map { "\($0.allowed) \($0.used) \(String(describing: $0.remaining))" }).count == 1)
        #expect(all.first?.used == 5)
        // All or nothing: 8 more do not fit in the 7 left, and count nothing.
        let tooMuch = try Self.record("retrier", "exports", 8, key: "export-43", on: run.connect())
        #expect(tooMuch == Answer(allowed: false, used: 5, limit: 12, remaining: 7, plan: "free", repeated: false))
    }

    @Test("limits: unlimited, not in the plan, an upgrade raises the limit at once, a downgrade keeps what was used")
    func planChanges() throws {
        let run = try HandlerRun()
        let connection = try run.connect()
        try connection.run(
            script: """
                INSERT INTO billing.plan_limits VALUES
                    ('basic', 'seats', 10), ('pro', 'seats', 100), ('pro', 'reports', NULL), ('free', 'seats', 1);
                """, context: "limits")
        let basic = events.price("price_basic", amount: 1000, lookupKey: "basic")
        let pro = events.price("price_pro", amount: 5000, lookupKey: "pro")
        try subscribe("ada", price: basic, at: 1, on: connection)
        #expect(try Self.record("ada", "seats", 10, key: "s1", on: connection).allowed)
        #expect(try Self.record("ada", "seats", 1, key: "s2", on: connection).allowed == false)
        #expect(
            try Self.record("ada", "reports", 1, key: "r1", on: connection)
                == Answer(allowed: false, used: 0, limit: 0, remaining: 0, plan: "basic", repeated: false))

        try subscribe("ada", price: pro, at: 2, on: connection)
        #expect(
            try Self.record("ada", "seats", 1, key: "s3", on: connection)
                == Answer(allowed: true, used: 11, limit: 100, remaining: 89, plan: "pro", repeated: false))
        #expect(
            try Self.record("ada", "reports", 1_000_000, key: "r2", on: connection)
                == Answer(allowed: true, used: 1_000_000, limit: nil, remaining: nil, plan: "pro", repeated: false))

        // Back to basic in the same period: 11 used is over the new 10, so nothing more until the next period.
        try subscribe("ada", price: basic, at: 3, on: connection)
        #expect(try Self.record("ada", "seats", 1, key: "s4", on: connection).allowed == false)
        #expect(
            try connection.firstValue(
                "SELECT used || '/' || limit_value || ' ' || remaining FROM billing.entitlements WHERE user_id = 'ada' AND feature = 'seats'"
            )
                == "11/10 0")

        // The next period (a renewal moves current_period_start) starts from zero.
        try subscribe("ada", price: basic, periodMinute: 30 * 24 * 60, at: 4, on: connection)
        #expect(
            try Self.record("ada", "seats", 10, key: "s5", on: connection)
                == Answer(allowed: true, used: 10, limit: 10, remaining: 0, plan: "basic", repeated: false))

        // Without a granting subscription: plan free, counted per calendar month.
        #expect(
            try Self.record("nobody", "seats", 1, key: "n1", on: connection)
                == Answer(allowed: true, used: 1, limit: 1, remaining: 0, plan: "free", repeated: false))
        let month = try connection.query(
            "SELECT period_start = date_trunc('month', now(), 'UTC') FROM billing.usage_events WHERE idempotency_key = 'n1'",
            context: "period"
        ).single().decode(Bool.self, at: 0)
        #expect(month)
    }

    @Test("usage.record jobs through their handler: applied once, a bad payload dead-lettered naming the field")
    func usageJobs() throws {
        let run = try HandlerRun()
        let connection = try run.connect()
        try connection.query("INSERT INTO billing.plan_limits VALUES ('free', 'emails', 3)", context: "limits")
        for payload in [
            #"{"user_id": "mia", "feature": "emails", "quantity": 2, "idempotency_key": "e1"}"#,
            #"{"user_id": "mia", "feature": "emails", "quantity": 2, "idempotency_key": "e1"}"#,
            #"{"user_id": "mia", "feature": "emails", "quantity": 1}"#,
            #"{"user_id": "mia", "feature": "emails", "quantity": "two"}"#,
        ] {
            try JobQueue().enqueue(NewJob(kind: "usage.record", payload: payload, queue: "webhooks"), on: connection)
        }
        try run.process([])
        #expect(
            try connection.firstValue("SELECT used::text FROM billing.usage_counters WHERE user_id = 'mia'")
                == "3")
        #expect(try connection.firstValue("SELECT count(*)::text FROM billing.usage_events") == "2")
        #expect(
            try connection.firstValue("SELECT errors -> -1 ->> 'error' FROM sluice.dead_letters")?.contains(
                "field quantity must be a number")
                == true)
    }

    @Test("the analytics views give the hand-computed figures of a seeded data set")
    func analytics() throws {
        let run = try HandlerRun()
        let connection = try run.connect()
        let monthly = events.price("price_m", amount: 1200, lookupKey: "pro")
        let yearly = events.price("price_y", amount: 12_000, lookupKey: "pro", interval: "year")
        let euro = events.price("price_e", amount: 900, lookupKey: "basic", currency: "eur")
        let seeds: [(String, String, [String: Any], Int)] = [
            ("a", "active", monthly, 0), ("b", "active", yearly, 0), ("c", "past_due", monthly, 0),
            ("d", "trialing", monthly, 0), ("e", "active", euro, 0), ("f", "canceled", monthly, 0),
        ]
        for (name, status, price, created) in seeds {
            try BillingEvents.apply(
                events.stripe(
                    "an_\(name)", "customer.subscription.updated", at: 60 + created,
                    events.subscription(
                        status: status, price: price, id: "sub_\(name)", customer: "cus_\(name)", createdMinute: created
                    )),
                on: connection)
        }
        // Invoices: one failed and recovered, one failed and still open, one failed and uncollectible.
        for (id, outcome) in [("in_ok", "paid"), ("in_open", "open"), ("in_lost", "uncollectible")] {
            try BillingEvents.apply(
                events.stripe(
                    "\(id)_failed", "invoice.payment_failed", at: 10,
                    events.invoice(id, status: "open", paid: 0, attempts: 1)),
                on: connection)
            try BillingEvents.apply(
                events.stripe(
                    "\(id)_after", "invoice.updated", at: 20,
                    events.invoice(id, status: outcome, paid: outcome == "paid" ? 2500 : 0, attempts: 2)),
                on: connection)
        }
        try connection.query("INSERT INTO billing.plan_limits VALUES ('free', 'api', NULL)", context: "limits")
        for (user, quantity) in [("u1", 30), ("u2", 50), ("u3", 10)] {
            _ = try Self.record(user, "api", quantity, key: "seed-\(user)", on: connection)
        }

        // MRR: pro usd = 1200 (a) + 12000 / 12 (b) + 1200 (c, past_due) = 3400; basic eur = 900; trials and canceled out.
        #expect(
            try connection.firstValue(
                "SELECT string_agg(plan || ' ' || currency || ' ' || subscriptions || ' ' || mrr, '; ' ORDER BY plan) FROM billing.mrr"
            )
                == "basic eur 1 900; pro usd 3 3400")
        #expect(
            try connection.firstValue(
                "SELECT string_agg(plan || ':' || status || ':' || subscriptions, ' ' ORDER BY plan, status) FROM billing.active_subscriptions"
            )
                == "basic:active:1 pro:active:2 pro:past_due:1 pro:trialing:1")
        // All six were created in September 2026; the canceled one ended 30 days after its period began, in October.
        #expect(
            try connection.firstValue(
                "SELECT string_agg(to_char(month, 'YYYY-MM') || ' ' || new || ' ' || churned || ' ' || net, '; ' ORDER BY month) FROM billing.subscription_movements"
            )
                == "2026-09 6 0 6; 2026-10 0 1 -1")
        #expect(
            try connection.firstValue(
                "SELECT to_char(month, 'YYYY-MM') || ' ' || failed || ' ' || recovered || ' ' || still_open || ' ' || lost || ' ' || recovery_rate FROM billing.payment_recovery"
            )
                == "2026-09 3 1 1 1 0.333")
        #expect(
            try connection.firstValue(
                "SELECT string_agg(rank || ':' || user_id || ':' || used, ' ' ORDER BY rank) FROM billing.top_usage WHERE feature = 'api'"
            )
                == "1:u2:50 2:u1:30 3:u3:10")
    }
}
