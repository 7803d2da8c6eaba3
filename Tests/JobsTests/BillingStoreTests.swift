import Foundation
import TestKit
import Testing

@testable import Jobs
@testable import PGQueue

/// The typed reads and writes of ``BillingStore``, on a cloned database, and the payload decoding the
/// Stripe jobs share.
@Suite("billing store and job payloads")
struct BillingStoreTests {
    let events = BillingEvents()

    @Test("access, usage and entitlements come back typed: unlimited is nil, the period end a date")
    func accessAndUsage() throws {
        let database = try TestDatabase()
        let store = BillingStore(try database.connect())
        try store.connection.run(
            script: "INSERT INTO billing.plan_limits VALUES ('basic', 'seats', 3), ('basic', 'reports', NULL)",
            context: "limits")
        let basic = events.price("price_basic", amount: 1000, lookupKey: "basic")
        for delivery in [
            events.clerk(
                "signup", "user.created", at: 0,
                events.user("ada", email: "a@x", first: "A", last: "L", updatedMinute: 0)),
            events.stripe(
                "customer", "customer.created", at: 1,
                ["id": "cus_1", "object": "customer", "metadata": ["clerk_user_id": "ada"]]),
            events.stripe(
                "sub", "customer.subscription.updated", at: 2, events.subscription(status: "active", price: basic)),
        ] {
            try BillingEvents.apply(delivery, on: store.connection)
        }

        let access = try store.access(of: "ada")
        #expect(access.hasAccess && access.plan == "basic" && access.subscriptionID == "sub_1")
        #expect(try !store.access(of: "nobody").hasAccess)

        let first = try store.recordUsage(user: "ada", feature: "seats", quantity: 2, idempotencyKey: "k1")
        #expect(first.allowed && first.used == 2 && first.limit == 3 && first.remaining == 1 && !first.repeated)
        #expect(first.periodEnd != nil)
        #expect(try store.recordUsage(user: "ada", feature: "seats", quantity: 2, idempotencyKey: "k1").repeated)
        let unlimited = try store.recordUsage(user: "ada", feature: "reports", quantity: 9, idempotencyKey: "k2")
        #expect(unlimited.allowed && unlimited.limit == nil && unlimited.remaining == nil)

        let entitlements = try store.entitlements(of: "ada")
        #expect(entitlements.map(\.feature) == ["reports", "seats"])
        #expect(entitlements[0].limit == nil && entitlements[0].used == 9)
        #expect(entitlements[1].limit == 3 && entitlements[1].remaining == 1)

        #expect(try store.customer(ofUser: "ada") == "cus_1")
        #expect(try store.subscription(ofUser: "ada") == "sub_1")
        #expect(try store.currentPeriodEnd(ofSubscription: "sub_1") != nil)
        #expect(try store.businessSummary()?.map(\.title).count == 5)
    }

    @Test("settings round-trip, and a processed event is recognised among others")
    func settingsAndProcessedEvents() throws {
        let database = try TestDatabase()
        let store = BillingStore(try database.connect())
        #expect(try store.setting("stripe_events_cursor") == nil)
        try store.setSetting("stripe_events_cursor", to: "42", description: "test")
        try store.setSetting("stripe_events_cursor", to: "43", description: "test")
        #expect(try store.setting("stripe_events_cursor") == "43")
        try BillingEvents.apply(
            events.stripe("one", "customer.created", at: 1, ["id": "cus_9", "object": "customer"]), on: store.connection
        )
        #expect(try store.processedStripeEvents(among: ["evt_one", "evt_other"]) == ["evt_one"])
    }

    static func job(_ payload: String) -> ClaimedJob {
        ClaimedJob(
            id: 1, queue: "default", kind: "stripe.change_plan", payload: payload, priority: 0, attempt: 1,
            maxAttempts: 5, uniqueKey: nil, runAt: Date(), createdAt: Date(), holder: "h")
    }

    static func refusal(_ payload: String) -> String? {
        do {
            _ = try JobPayload.decode(ChangePlanPayload.self, from: job(payload))
            return nil
        } catch {
            #expect(error.isPermanent)
            return error.message
        }
    }

    @Test("a payload that does not fit fails for good, naming the field and what it must be")
    func payloadMessages() throws {
        #expect(Self.refusal(#"{"user_id": "u"}"#) == "payload field price is missing")
        #expect(Self.refusal(#"{"price": 7}"#) == "payload field price must be a non-empty string")
        #expect(Self.refusal(#"{"price": ""}"#) == "payload field price must be a non-empty string")
        #expect(
            Self.refusal(#"{"price": "p", "at": "later"}"#) == "payload field at must be now or period_end, got later")
        #expect(Self.refusal(#"["price"]"#) == "the payload is not a JSON object")
        #expect(Self.refusal("not json") == "the payload is not a JSON object")
        let fine = try JobPayload.decode(
            ChangePlanPayload.self, from: Self.job(#"{"user_id": "u", "price": "p", "at": "period_end"}"#))
        #expect(fine.price.value == "p" && fine.at == .periodEnd && fine.subscriptionID == nil)
    }
}

/// What the app's API reads: its access and invoice bodies, and the invoice fields it shows.
@Suite("billing for the app's API")
struct BillingAPITests {
    let events = BillingEvents()

    static func json(_ text: String) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
    }

    @Test("an invoice keeps its hosted page and creation time; erasing its customer removes the page for good")
    func hostedInvoice() throws {
        let run = try HandlerRun()
        let store = BillingStore(try run.connect())
        var invoice = events.invoice("in_h", status: "open", paid: 0, attempts: 1)
        invoice["customer"] = "cus_1"
        invoice["hosted_invoice_url"] = "https://invoice.stripe.com/i/acct_1/test_h"
        invoice["created"] = events.start
        let link: [String: Any] = ["id": "cus_1", "object": "customer", "metadata": ["clerk_user_id": "ada"]]
        try run.process([
            events.stripe("link", "customer.created", at: 0, link),
            events.stripe("invoice_open", "invoice.finalized", at: 1, invoice),
        ])
        let listed = try Self.json(try store.apiInvoices(of: "ada", limit: 10))
        let first = try #require((listed["invoices"] as? [[String: Any]])?.first)
        #expect(first["id"] as? String == "in_h" && first["status"] as? String == "open")
        #expect(first["hosted_invoice_url"] as? String == "https://invoice.stripe.com/i/acct_1/test_h")
        #expect((first["created"] as? String)?.hasPrefix("2026-09-21") == true, "\(first)")
        #expect(try Self.json(try store.apiInvoices(of: "nobody", limit: 10))["invoices"] as? [Any] != nil)

        var paid = invoice
        paid["status"] = "paid"
        try run.process([
            events.stripe("gone", "customer.deleted", at: 2, ["id": "cus_1", "object": "customer", "deleted": true])
        ])
        let connection = try run.connect()
        #expect(try connection.firstValue("SELECT (hosted_invoice_url IS NULL)::text FROM billing.invoices") == "true")
        try run.process([events.stripe("invoice_paid_late", "invoice.paid", at: 3, paid)])
        #expect(
            try connection.firstValue(
                "SELECT status || ' ' || (hosted_invoice_url IS NULL)::text FROM billing.invoices") == "paid true")
        #expect(
            try connection.firstValue(
                "SELECT count(*)::text FROM billing.audit_log WHERE (before ->> 'hosted_invoice_url') IS NOT NULL OR (after ->> 'hosted_invoice_url') IS NOT NULL"
            ) == "0")
    }

    @Test("the access body has the documented fields, entitlements sorted, unlimited as null")
    func accessBody() throws {
        let database = try TestDatabase()
        let store = BillingStore(try database.connect())
        try store.connection.run(
            script: "INSERT INTO billing.plan_limits VALUES ('free', 'seats', 2), ('free', 'exports', NULL)",
            context: "limits")
        try BillingEvents.apply(
            events.clerk(
                "bo", "user.created", at: 0, events.user("bo", email: "b@x", first: "B", last: "O", updatedMinute: 0)),
            on: store.connection)
        _ = try store.recordUsage(user: "bo", feature: "seats", quantity: 1, idempotencyKey: "k")
        let body = try Self.json(try store.apiAccess(of: "bo"))
        #expect(
            Set(body.keys) == ["user_id", "has_access", "plan", "status", "reason", "access_until", "entitlements"])
        #expect(body["user_id"] as? String == "bo" && body["plan"] as? String == "free")
        let entitlements = try #require(body["entitlements"] as? [[String: Any]])
        #expect(entitlements.map { $0["feature"] as? String } == ["exports", "seats"])
        #expect(entitlements[0]["limit_value"] is NSNull && entitlements[1]["used"] as? Int == 1)
    }
}
