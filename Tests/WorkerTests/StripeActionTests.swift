import Foundation
import PGQueue
import TestKit
import Testing

/// The jobs that call Stripe, run by the real pool against `FakeStripe`, which answers like Stripe's API
/// and records what it received.
@Suite("Stripe actions", .serialized)
struct StripeActionTests {
    let events = BillingEvents()

    /// A database with user_1 linked to cus_1 and subscribed (sub_1, price_basic), and a fake Stripe.
    func setUp(_ name: String) async throws -> (BillingRun, FakeStripe, [String: String]) {
        let run = try BillingRun()
        let connection = try run.connect()
        for delivery in events.lifecycle.prefix(9) { try BillingEvents.apply(delivery, on: connection) }
        let stripe = try FakeStripe()
        return (run, stripe, ["STRIPE_API_BASE": stripe.url, "STRIPE_API_KEY": "sk_test_sluice"])
    }

    func enqueue(_ kind: String, _ payload: String, on run: BillingRun) throws -> Int64 {
        try JobQueue().enqueue(NewJob(kind: kind, payload: payload, queue: "webhooks"), on: run.connect())
    }

    @Test(
        "change_plan sends the item and new price with the pinned version and an idempotency key, and updates the model at once"
    )
    func changePlan() async throws {
        let (run, stripe, environment) = try await setUp("change_plan")
        let id = try enqueue(
            "stripe.change_plan",
            #"{"user_id": "user_1", "price": "price_team", "proration_behavior": "always_invoice"}"#, on: run)
        let enqueued = try #require(
            try run.connect().firstValue(
                "SELECT (extract(epoch FROM created_at) * 1000000)::bigint::text FROM sluice.jobs WHERE id = \(id)"))
        try run.process([], environment: environment)
        let requests = stripe.received
        #expect(
            requests.map { "\($0.method) \($0.path)" } == [
                "GET /v1/subscriptions/sub_1", "POST /v1/subscriptions/sub_1",
            ])
        let post = try #require(requests.last)
        #expect(
            post.form == [
                "items[0][id]": "si_test", "items[0][price]": "price_team", "proration_behavior": "always_invoice",
            ])
        #expect(post.headers["stripe-version"] == "2025-03-31.basil")
        #expect(post.headers["authorization"] == "Bearer sk_test_sluice")
        // The enqueue time makes the key unique to this job: a restored database reusing the id sends another.
        #expect(post.headers["idempotency-key"] == "sluice-\(id)-\(enqueued)-stripe.change_plan-update")
        let connection = try run.connect()
        #expect(
            try connection.firstValue("SELECT price_id || ' ' || plan FROM billing.subscriptions WHERE id = 'sub_1'")
                == "price_team team")
        #expect(
            try connection.firstValue("SELECT sluice.job_result(\(id)) -> 'subscription' ->> 'price'")
                == "price_team")
    }

    @Test("a job retried after a 500 resends the same idempotency key; a 429 waits out Retry-After")
    func retries() async throws {
        let (run, stripe, environment) = try await setUp("retries")
        stripe.script(
            "POST", "/v1/subscriptions/sub_1",
            [.init(status: 500, body: #"{"error":{"type":"api_error","message":"boom"}}"#)])
        stripe.script(
            "GET", "/v1/subscriptions/sub_1",
            [.init(status: 429, body: #"{"error":{"type":"rate_limit_error"}}"#, headers: ["Retry-After": "1"])])
        let id = try enqueue(
            "stripe.cancel_subscription", #"{"subscription_id": "sub_1", "at": "period_end"}"#, on: run)
        _ = try enqueue("stripe.change_plan", #"{"subscription_id": "sub_1", "price": "price_pro"}"#, on: run)
        try run.process([], environment: environment)
        let cancels = stripe.received.filter { $0.form["cancel_at_period_end"] == "true" }
        #expect(cancels.count == 2)
        #expect(
            Set(cancels.map { $0.headers["idempotency-key"] ?? "" }).count == 1
                && cancels.allSatisfy {
                    $0.headers["idempotency-key"]?.hasPrefix("sluice-\(id)-") == true
                        && $0.headers["idempotency-key"]?.hasSuffix("-stripe.cancel_subscription-cancel") == true
                })
        let gets = stripe.received.filter { $0.method == "GET" }
        #expect(gets.count == 2)
        if gets.count == 2 { #expect(gets[1].at.timeIntervalSince(gets[0].at) >= 0.9) }
        let connection = try run.connect()
        #expect(try connection.firstValue("SELECT count(*)::text FROM sluice.dead_letters") == "0")
        #expect(try connection.firstValue("SELECT count(*)::text FROM sluice.job_results") == "2")
    }

    @Test("402 and 400 answers end in the dead letters with Stripe's message")
    func refusals() async throws {
        let (run, stripe, environment) = try await setUp("refusals")
        stripe.script(
            "POST", "/v1/subscriptions/sub_1",
            [
                .init(
                    status: 402,
                    body:
                        #"{"error":{"type":"card_error","code":"card_declined","decline_code":"insufficient_funds","message":"Your card has insufficient funds."}}"#
                )
            ])
        stripe.script(
            "POST", "/v1/billing_portal/sessions",
            [
                .init(
                    status: 400,
                    body: #"{"error":{"type":"invalid_request_error","message":"No configuration provided."}}"#)
            ])
        _ = try enqueue("stripe.resume_subscription", #"{"subscription_id": "sub_1"}"#, on: run)
        _ = try enqueue(
            "stripe.create_portal_session", #"{"user_id": "user_1", "return_url": "https://app.example.com"}"#, on: run)
        try run.process([], environment: environment)
        let errors = try run.connect().query(
            "SELECT kind, attempt, errors -> -1 ->> 'error' FROM sluice.dead_letters ORDER BY kind",
            context: "dead letters"
        ).map { try "\($0.decode(String.self, at: 0)) \($0.decode(Int.self, at: 1)): \($0.decode(String.self, at: 2))" }
        #expect(errors.count == 2)
        #expect(errors.first?.contains("stripe.create_portal_session 1:") == true)
        #expect(errors.first?.contains("400 (invalid_request_error): No configuration provided.") == true)
        #expect(
            errors.last?.contains(
                "402 (card_error, card_declined, insufficient_funds): Your card has insufficient funds.") == true)
    }

    @Test(
        "a 409 and Stripe-Should-Retry: true are retried with the same key; Should-Retry: false is final; an id with a slash never reaches Stripe"
    )
    func retryHeadersAndPathIDs() async throws {
        let (run, stripe, environment) = try await setUp("retry_headers")
        stripe.script(
            "POST", "/v1/subscriptions/sub_1",
            [
                .init(status: 409, body: #"{"error":{"type":"idempotency_error","message":"Request in flight."}}"#),
                .init(
                    status: 400, body: #"{"error":{"type":"api_error","message":"Try again."}}"#,
                    headers: ["Stripe-Should-Retry": "true"]),
            ])
        stripe.script(
            "POST", "/v1/billing_portal/sessions",
            [
                .init(
                    status: 503, body: #"{"error":{"type":"api_error","message":"Do not retry."}}"#,
                    headers: ["Stripe-Should-Retry": "false"])
            ])
        let resume = try enqueue("stripe.resume_subscription", #"{"subscription_id": "sub_1"}"#, on: run)
        _ = try enqueue(
            "stripe.create_portal_session", #"{"user_id": "user_1", "return_url": "https://app.example.com"}"#, on: run)
        _ = try enqueue("stripe.resume_subscription", #"{"subscription_id": "sub_1/discount"}"#, on: run)
        try run.process([], environment: environment)
        let resumes = stripe.received.filter { $0.method == "POST" && $0.path == "/v1/subscriptions/sub_1" }
        #expect(resumes.count == 3)
        #expect(Set(resumes.map { $0.headers["idempotency-key"] ?? "" }).count == 1)
        #expect(!stripe.received.contains { $0.path.contains("discount") })
        let connection = try run.connect()
        #expect(
            try connection.firstValue("SELECT count(*)::text FROM sluice.job_results WHERE job_id = \(resume)")
                == "1")
        let dead = try connection.query(
            "SELECT kind || ' ' || attempt || ': ' || (errors -> -1 ->> 'error') FROM sluice.dead_letters ORDER BY kind",
            context: "dead letters"
        ).map { row throws(PostgresError) in try row.decode(String.self, at: 0) }
        #expect(dead.count == 2, "\(dead)")
        #expect(dead.first?.contains("stripe.create_portal_session 1:") == true, "\(dead)")
        #expect(dead.last?.contains("is not a Stripe object id") == true, "\(dead)")
    }

    @Test(
        "a user whose Stripe customer was deleted checks out as a new customer, which is then linked; the old link stays"
    )
    func deletedCustomerDoesNotBlock() async throws {
        let (run, stripe, environment) = try await setUp("deleted_customer")
        let connection = try run.connect()
        try BillingEvents.apply(
            events.stripe("cus_1_deleted", "customer.deleted", at: 50, ["id": "cus_1", "object": "customer"]),
            on: connection)
        _ = try enqueue(
            "stripe.create_checkout_session",
            #"{"user_id": "user_1", "price": "price_pro", "success_url": "https://a/ok", "cancel_url": "https://a/no"}"#,
            on: run)
        try run.process([], environment: environment)
        let session = try #require(stripe.received.first { $0.path == "/v1/checkout/sessions" })
        #expect(session.form["customer"] == nil)
        #expect(session.form["client_reference_id"] == "user_1")
        #expect(try connection.firstValue("SELECT count(*)::text FROM sluice.dead_letters") == "0")

        // Stripe made cus_2 at checkout: the session's completion links it, and cus_1 stays as history.
        try BillingEvents.apply(
            events.stripe(
                "checkout_done", "checkout.session.completed", at: 51,
                ["id": "cs_2", "object": "checkout.session", "customer": "cus_2", "client_reference_id": "user_1"]),
            on: connection)
        #expect(
            try connection.firstValue(
                "SELECT customer_id FROM billing.customer_links WHERE user_id = 'user_1' AND unlinked_at IS NULL")
                == "cus_2")
        #expect(
            try connection.firstValue(
                "SELECT (unlinked_at IS NOT NULL)::text FROM billing.customer_links WHERE customer_id = 'cus_1'")
                == "true")
        #expect(
            try connection.firstValue(
                "SELECT count(*)::text FROM billing.audit_log WHERE action = 'unlinked' AND entity_id = 'cus_1'")
                == "1")
    }

    @Test("a portal session URL reaches a caller waiting on NOTIFY sluice_job_results")
    func portalResult() async throws {
        let (run, stripe, environment) = try await setUp("portal")
        let listener = try run.connect()
        try listener.listen("sluice_job_results")
        let id = try enqueue(
            "stripe.create_portal_session", #"{"user_id": "user_1", "return_url": "https://app.example.com/account"}"#,
            on: run)
        try run.process([], environment: environment)
        #expect(
            eventually(timeout: 10) { (try? listener.pollNotifications())?.contains { $0.payload == "\(id)" } == true })
        #expect(
            try listener.firstValue("SELECT sluice.job_result(\(id)) ->> 'url'")
                == "https://billing.stripe.com/p/session/test_cus_1")
        #expect(stripe.received.count == 1)
    }

    @Test("checkout carries the user as client_reference_id; cancel now and at period end update the model")
    func checkoutAndCancel() async throws {
        let (run, stripe, environment) = try await setUp("checkout")
        let checkout = try enqueue(
            "stripe.create_checkout_session",
            #"{"user_id": "user_1", "price": "price_pro", "success_url": "https://a/ok", "cancel_url": "https://a/no"}"#,
            on: run)
        _ = try enqueue("stripe.cancel_subscription", #"{"user_id": "user_1"}"#, on: run)
        try run.process([], environment: environment)
        let session = try #require(stripe.received.first { $0.path == "/v1/checkout/sessions" })
        #expect(session.form["client_reference_id"] == "user_1")
        #expect(session.form["customer"] == "cus_1")
        #expect(session.form["line_items[0][price]"] == "price_pro")
        let connection = try run.connect()
        #expect(
            try connection.firstValue("SELECT sluice.job_result(\(checkout)) ->> 'url'")
                == "https://checkout.stripe.com/c/pay/cs_test")
        #expect(
            try connection.firstValue("SELECT cancel_at_period_end::text FROM billing.subscriptions WHERE id = 'sub_1'")
                == "true"
        )

        _ = try enqueue("stripe.cancel_subscription", #"{"subscription_id": "sub_1", "at": "now"}"#, on: run)
        try run.process([], environment: environment)
        #expect(stripe.received.last.map { "\($0.method) \($0.path)" } == "DELETE /v1/subscriptions/sub_1")
        #expect(
            try connection.firstValue("SELECT status FROM billing.subscriptions WHERE id = 'sub_1'")
                == "canceled")
    }
}
