import Foundation
import PGQueue
import TestKit
import Testing

/// Reconciliation, metered usage, resync and periodic jobs, against `FakeStripe` and the real pool.
@Suite("Stripe sync and periodic jobs", .serialized)
struct StripeSyncTests {
    let events = BillingEvents()

    static func eventJSON(_ delivery: BillingEvents.Delivery) -> [String: Any] {
        (try? JSONSerialization.jsonObject(with: Data(delivery.body))) as? [String: Any] ?? [:]
    }

    @Test("reconciliation enqueues exactly the events that neither a webhook nor an earlier run brought")
    func reconcile() async throws {
        let run = try BillingRun()
        let connection = try run.connect()
        let stripe = try FakeStripe()
        let lifecycle = events.lifecycle
        let processed = lifecycle[6]  // applied already
        let waiting = lifecycle[7]  // delivered by webhook, still in the queue
        let missed = lifecycle[8]  // never delivered
        try BillingEvents.apply(processed, on: connection)
        try JobQueue().enqueue(waiting.job, on: connection)
        let page: [String: Any] = [
            "object": "list", "has_more": false,
            "data": [missed, waiting, processed].map(Self.eventJSON),
        ]
        stripe.script("GET", "/v1/events", [.init(status: 200, body: StripeJobSupportJSON.text(page))])
        let id = try JobQueue().enqueue(NewJob(kind: "stripe.reconcile", queue: "webhooks"), on: connection)
        try run.process(
            [], environment: ["STRIPE_API_BASE": stripe.url, "STRIPE_API_KEY": "sk_test_x", "SLUICE_PERIODIC": "off"])
        #expect(try connection.firstValue("SELECT sluice.job_result(\(id)) ->> 'enqueued'") == "1")
        #expect(try connection.firstValue("SELECT count(*)::text FROM billing.processed_events") == "3")
        #expect(try connection.firstValue("SELECT status FROM billing.subscriptions") == "active")
        #expect(
            try connection.firstValue("SELECT value FROM billing.settings WHERE key = 'stripe_events_cursor'")
                != nil)
        #expect(stripe.received.first?.form["limit"] == "100")
    }

    @Test("usage reported twice is billed once: one meter event per use, identified by its key")
    func meteredUsage() async throws {
        let run = try BillingRun()
        let connection = try run.connect()
        for delivery in events.lifecycle.prefix(7) { try BillingEvents.apply(delivery, on: connection) }
        try connection.run(
            script: """
                INSERT INTO billing.plan_limits VALUES ('basic', 'tokens', NULL);
                INSERT INTO billing.meters VALUES ('tokens', 'llm_tokens');
                SELECT billing.record_usage('user_1', 'tokens', 1200, 'req-1');
                SELECT billing.record_usage('user_1', 'tokens', 300, 'req-2');
                """, context: "usage")
        let stripe = try FakeStripe()
        let environment = ["STRIPE_API_BASE": stripe.url, "STRIPE_API_KEY": "sk_test_x", "SLUICE_PERIODIC": "off"]
        // The first report of req-1 is refused: kept aside with Stripe's reason, and req-2 still goes.
        stripe.script(
            "POST", "/v1/billing/meter_events",
            [.init(status: 400, body: #"{"error":{"type":"invalid_request_error","message":"No such meter."}}"#)])
        try JobQueue().enqueue(NewJob(kind: "stripe.report_usage", queue: "webhooks"), on: connection)
        try run.process([], environment: environment)
        #expect(
            try connection.firstValue(
                "SELECT idempotency_key || ': ' || report_error FROM billing.usage_events WHERE report_error IS NOT NULL"
            )?
            .hasSuffix("No such meter.") == true)
        try connection.query("UPDATE billing.usage_events SET report_error = NULL", context: "operator retries")
        for _ in 0..<2 {
            try JobQueue().enqueue(NewJob(kind: "stripe.report_usage", queue: "webhooks"), on: connection)
            try run.process([], environment: environment)
        }
        let sent = stripe.received.filter { $0.path == "/v1/billing/meter_events" }.dropFirst()
        #expect(sent.map { $0.form["identifier"] ?? "" }.sorted() == ["req-1", "req-2"])
        #expect(sent.map { $0.form["payload[value]"] ?? "" }.sorted() == ["1200", "300"])
        #expect(
            sent.allSatisfy {
                $0.form["payload[stripe_customer_id]"] == "cus_1" && $0.form["event_name"] == "llm_tokens"
            })
        #expect(
            try connection.firstValue("SELECT count(*)::text FROM billing.usage_events WHERE reported_at IS NULL")
                == "0")
    }

    @Test("resync refetches a customer's subscriptions and open invoices and applies them")
    func resync() async throws {
        let run = try BillingRun()
        let connection = try run.connect()
        let stripe = try FakeStripe()
        let subscription = events.subscription(
            status: "past_due", price: events.price("price_pro", amount: 2500, lookupKey: "pro"))
        let invoice = events.invoice("in_9", status: "open", paid: 0, attempts: 2)
        stripe.script(
            "GET", "/v1/customers/cus_1",
            [
                .init(
                    status: 200,
                    body: StripeJobSupportJSON.text(["id": "cus_1", "object": "customer", "email": "a@example.com"]))
            ])
        stripe.script(
            "GET", "/v1/subscriptions",
            [
                .init(
                    status: 200,
                    body: StripeJobSupportJSON.text(["object": "list", "has_more": false, "data": [subscription]]))
            ])
        stripe.script(
            "GET", "/v1/invoices",
            [
                .init(
                    status: 200,
                    body: StripeJobSupportJSON.text(["object": "list", "has_more": false, "data": [invoice]]))
            ])
        let id = try JobQueue().enqueue(
            NewJob(kind: "stripe.resync", payload: #"{"customer_id": "cus_1"}"#, queue: "webhooks"), on: connection)
        try run.process(
            [], environment: ["STRIPE_API_BASE": stripe.url, "STRIPE_API_KEY": "sk_test_x", "SLUICE_PERIODIC": "off"])
        #expect(
            try connection.firstValue("SELECT sluice.job_result(\(id))::text")
                == #"{"invoices": 1, "customers": 1, "subscriptions": 1}"#)
        #expect(
            try connection.firstValue("SELECT status || ' ' || plan FROM billing.subscriptions")
                == "past_due pro")
        #expect(
            try connection.firstValue("SELECT status || ' ' || attempt_count FROM billing.invoices")
                == "open 2")
        #expect(stripe.received.first { $0.path == "/v1/subscriptions" }?.form["status"] == "all")
    }

    @Test("a periodic job runs once per slot with three worker processes running")
    func periodic() throws {
        let database = try TestDatabase()
        let environment = ["SLUICE_PERIODIC": "sluice.test.mark@1s", "SLUICE_CONCURRENCY": "2"]
        let workers = try (0..<3).map { _ in
            try SluiceProcess(["work"], databaseURL: database.url, environment: environment)
        }
        Thread.sleep(forTimeInterval: 6)
        for worker in workers { worker.signal(SIGTERM) }
        for worker in workers { _ = worker.waitForExit(timeout: 20) }
        let slots = try database.count(
            "SELECT count(*) FROM sluice.unique_keys WHERE key LIKE 'periodic:sluice.test.mark:%'")
        let marks = try database.count("SELECT count(*) FROM sluice_test.marks")
        let distinct = try database.count("SELECT count(DISTINCT job_id) FROM sluice_test.marks")
        #expect(slots >= 4, "\(workers.map(\.log).joined(separator: "\n---\n"))")
        #expect(marks == distinct)
        #expect(marks >= slots - 1 && marks <= slots)
    }
}

/// JSON text of a dictionary, for scripted answers.
enum StripeJobSupportJSON {
    static func text(_ object: [String: Any]) -> String {
        String(decoding: (try? JSONSerialization.data(withJSONObject: object)) ?? Data("{}".utf8), as: UTF8.self)
    }
}
