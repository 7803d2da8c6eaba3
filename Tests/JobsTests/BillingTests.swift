import Foundation
import Jobs
import PGQueue
import TestKit
import Testing

/// The billing model, fed through the job handlers with jobs shaped as the receiver stores them, each run
/// on a database of its own.
@Suite("billing model")
struct BillingTests {
    let events = BillingEvents()

    @Test("the fixtures and events built from objects.json, in both payload shapes, change the model as expected")
    func fixtures() throws {
        let run = try HandlerRun()
        var deliveries: [BillingEvents.Delivery] = []
        for name in WebhookSigning.stripeFixtures {
            let body = try WebhookSigning.fixture("stripe/events/\(name).json")
            let id = try #require(
                (try JSONSerialization.jsonObject(with: Data(body)) as? [String: Any])?["id"] as? String)
            deliveries.append(.init(name: name, kind: "stripe.event", eventID: "\(id)-\(name)", body: body))
        }
        for name in ["user_created", "user_updated"] {
            deliveries.append(
                .init(
                    name: name, kind: "clerk.event", eventID: "msg_\(name)",
                    body: try WebhookSigning.fixture("clerk/\(name).json")))
        }
        // The current API shape, from Stripe's OpenAPI examples.
        let objects = try #require(
            (try JSONSerialization.jsonObject(with: Data(WebhookSigning.fixture("stripe/objects.json")))
                as? [String: Any])?["resources"]
                as? [String: Any])
        for (resource, type) in [
            ("subscription", "customer.subscription.updated"), ("invoice", "invoice.payment_failed"),
            ("charge", "charge.refunded"), ("dispute", "charge.dispute.created"), ("customer", "customer.updated"),
            ("payout", "payout.paid"),
        ] {
            deliveries.append(
                events.stripe("objects_\(resource)", type, at: 100, try #require(objects[resource] as? [String: Any])))
        }
        let failures = try run.process(deliveries)
        let connection = try run.connect()
        #expect(try connection.firstValue("SELECT count(*)::text FROM sluice.dead_letters") == "0", "\(failures)")

        // 2020 shape: periods on the subscription; the deleted one is canceled.
        #expect(
            try connection.firstValue(
                "SELECT status || ' ' || current_period_end::date FROM billing.subscriptions WHERE id = 'sub_JLEPMp81LApOJl'"
            )
                == "active 2021-05-21")
        #expect(
            try connection.firstValue("SELECT status FROM billing.subscriptions WHERE id = 'sub_JdIzvfy6o5GZRd'")
                == "canceled")
        #expect(
            try connection.firstValue(
                "SELECT subscription_id || ' ' || status FROM billing.invoices WHERE id = 'in_1KJqKBJDPojXS6LNJbvLUgEy'"
            )
                == "sub_JsuPyCPhXWfZar paid")
        // Current shape: the period from the items, the invoice's subscription from parent.subscription_details.
        #expect(
            try connection.firstValue(
                "SELECT current_period_end::text FROM billing.subscriptions WHERE id = 'sub_1Pgc6rB7WZ01zgkWNy0Cn5nw'")
                != nil)
        #expect(
            try connection.firstValue(
                "SELECT subscription_id || ' ' || attempt_count || ' ' || next_payment_attempt::date FROM billing.invoices WHERE id = 'in_1Pgc6tB7WZ01zgkWu9fdqL6I'"
            )
                == "subscription 0 2009-02-13")
        #expect(
            try connection.firstValue(
                "SELECT unit_amount::text FROM billing.prices WHERE id = 'price_1J02UOJDPojXS6LNDao8fiaO'")
                == "400")
        #expect(
            try connection.firstValue("SELECT active::text FROM billing.products WHERE id = 'prod_JdJ6Wt7rsz4EPJ'")
                == "true")
        #expect(
            try connection.firstValue(
                "SELECT (deleted_at IS NOT NULL)::text FROM billing.customers WHERE id = 'cus_IhGfebO16cMIGN'")
                == "true")
        #expect(try connection.firstValue("SELECT count(*)::text FROM billing.charges") == "1")
        #expect(try connection.firstValue("SELECT count(*)::text FROM billing.disputes") == "1")
        #expect(
            try connection.firstValue("SELECT email FROM billing.users WHERE id = 'user_2vQk8Y1WmZ7nTbD4sJ0xKc9Lh'")
                == "ada.lovelace@example.com")
        #expect(
            try connection.firstValue(
                "SELECT outcome FROM billing.processed_events WHERE event_id = 'evt_objects_payout'")
                == "ignored")
        // customer_deleted and customer_updated carry the same event id: the second is absorbed.
        #expect(
            try connection.firstValue("SELECT count(*)::text FROM billing.processed_events")
                == "\(deliveries.count - 1)")
    }

    @Test("every handled event type is applied; an unknown type is recorded as ignored")
    func everyType() throws {
        let run = try HandlerRun()
        let price = events.price("price_t", amount: 900, lookupKey: "team")
        var deliveries: [BillingEvents.Delivery] = []
        var minute = 0
        func add(_ type: String, _ object: [String: Any]) {
            minute += 1
            deliveries.append(events.stripe("t\(minute)", type, at: minute, object))
        }
        for type in ["created", "updated", "trial_will_end", "paused", "resumed"] {
            add(
                "customer.subscription.\(type)",
                events.subscription(status: type == "paused" ? "paused" : "trialing", price: price))
        }
        for (type, status) in [
            ("created", "draft"), ("updated", "draft"), ("finalized", "open"), ("payment_failed", "open"),
            ("payment_action_required", "open"), ("payment_succeeded", "paid"), ("paid", "paid"), ("voided", "void"),
            ("marked_uncollectible", "uncollectible"),
        ] {
            add("invoice.\(type)", events.invoice("in_\(type)", status: status, paid: 0, attempts: 1))
        }
        for type in ["created", "updated", "deleted"] {
            add("customer.\(type)", ["id": "cus_\(type)", "object": "customer", "email": "c@example.com"])
            add("product.\(type)", ["id": "prod_\(type)", "object": "product", "name": "P"])
            add("price.\(type)", events.price("price_\(type)", amount: 100, lookupKey: "k"))
        }
        add(
            "checkout.session.completed",
            ["id": "cs_t", "object": "checkout.session", "customer": "cus_9", "client_reference_id": "user_9"])
        add(
            "charge.refunded",
            [
                "id": "ch_t", "object": "charge", "amount": 900, "amount_refunded": 900, "refunded": true,
                "currency": "usd",
            ])
        add(
            "charge.dispute.created",
            ["id": "dp_t", "object": "dispute", "charge": "ch_t", "amount": 900, "reason": "fraudulent"])
        add("invoiceitem.created", ["id": "ii_t", "object": "invoiceitem"])
        try run.process(deliveries)
        let connection = try run.connect()
        #expect(
            try connection.firstValue(
                "SELECT string_agg(type, ',' ORDER BY type) FROM billing.processed_events WHERE outcome <> 'applied'")
                == "invoiceitem.created")
        #expect(
            try connection.firstValue("SELECT count(*)::text FROM billing.processed_events") == "\(deliveries.count)")
        #expect(
            try connection.firstValue("SELECT status || ' ' || paused || ' ' || plan FROM billing.subscriptions")
                == "trialing false team")
        #expect(
            try connection.firstValue("SELECT string_agg(status, ',' ORDER BY id) FROM billing.invoices")
                == "draft,open,uncollectible,paid,open,open,paid,draft,void")
        #expect(
            try connection.firstValue("SELECT count(*)::text FROM billing.customers WHERE deleted_at IS NOT NULL")
                == "1")
        #expect(
            try connection.firstValue("SELECT user_id FROM billing.customer_links WHERE customer_id = 'cus_9'")
                == "user_9")
        #expect(try connection.firstValue("SELECT refunded::text FROM billing.charges") == "true")
        #expect(try connection.firstValue("SELECT reason FROM billing.disputes") == "fraudulent")
    }

    @Test("a whole lifecycle in order: upgrade logged, payment failure recorded, access follows the status")
    func lifecycle() throws {
        let lifecycle = events.lifecycle

        // Through the cancellation at period end: still active, and it says until when.
        let partial = try HandlerRun()
        try partial.process(Array(lifecycle.prefix(14)))
        let access = try partial.connect().query(
            "SELECT has_access, plan, status, reason FROM billing.user_access WHERE user_id = 'user_1'",
            context: "access"
        ).single()
        #expect(try access.decode(Bool.self, at: 0))
        #expect(try access.decode(String.self, at: 1) == "pro")
        #expect(try access.decode(String.self, at: 3).contains("cancels at period end"))

        // Past due: access during the grace period only, counted from when it became past_due.
        let pastDue = try HandlerRun()
        try pastDue.process(Array(lifecycle.prefix(11)))
        let connection = try pastDue.connect()
        #expect(
            try connection.firstValue("SELECT has_access::text || ' ' || plan FROM billing.user_access")
                == "false free")
        #expect(
            try connection.firstValue("SELECT reason FROM billing.user_access")?.contains("grace period over") == true)
        try connection.query(
            "UPDATE billing.settings SET value = '100 years' WHERE key = 'past_due_grace_period'", context: "grace")
        #expect(
            try connection.firstValue("SELECT has_access::text || ' ' || plan FROM billing.user_access") == "true pro")
        #expect(
            try connection.firstValue(
                "SELECT attempt_count || ' ' || status || ' ' || next_payment_attempt::date FROM billing.invoices WHERE id = 'in_2'"
            )
                == "1 open 2026-09-24")

        // The whole lifecycle: canceled, no access, free plan; the upgrade is in the audit log.
        let full = try HandlerRun()
        try full.process(lifecycle)
        let done = try full.connect()
        #expect(
            try done.firstValue("SELECT status || ' ' || plan || ' ' || amount FROM billing.subscriptions")
                == "canceled pro 2500")
        #expect(
            try done.firstValue("SELECT has_access::text || ' ' || plan || ' ' || reason FROM billing.user_access")
                == "false free subscription canceled")
        #expect(
            try done.firstValue("SELECT email || ' ' || last_name FROM billing.users") == "ada@example.org Lovelace")
        #expect(
            try done.firstValue(
                "SELECT string_agg(id || ':' || status || ':' || attempt_count, ' ' ORDER BY id) FROM billing.invoices")
                == "in_1:paid:1 in_2:paid:2")
        #expect(
            try done.firstValue(
                "SELECT before ->> 'price_id' || ' -> ' || (after ->> 'price_id') FROM billing.audit_log WHERE action = 'upgraded'"
            )
                == "price_basic -> price_pro")
    }

    @Test("the lifecycle with duplicates, in twelve seeded random orders, ends in exactly the in-order state")
    func anyOrder() throws {
        let lifecycle = events.lifecycle
        let inOrder = try HandlerRun()
        try inOrder.process(lifecycle)
        let expected = try inOrder.state()

        var generator = SeededGenerator(seed: 20_261_126)
        for round in 0..<12 {
            var deliveries = lifecycle.shuffled(using: &generator)
            // Redeliveries past the queue's deduplication (a new unique key): billing.processed_events absorbs them.
            for _ in 0..<4 {
                var again = lifecycle.randomElement(using: &generator)!
                again.name += "_again"
                deliveries.insert(again, at: Int.random(in: 0...deliveries.count, using: &generator))
            }
            let run = try HandlerRun()
            let connection = try run.connect()
            for delivery in deliveries {
                var job = delivery.job
                job.uniqueKey = (job.uniqueKey ?? "") + (delivery.name.hasSuffix("_again") ? "#again\(round)" : "")
                try JobQueue().enqueue(job, on: connection)
            }
            try run.process([])
            let state = try run.state()
            #expect(
                state == expected,
                "round \(round): \(deliveries.map(\.name))\n--- got\n\(state)\n--- expected\n\(expected)")
        }
    }

    @Test("forty concurrent updates of one subscription end in the newest state, nothing failed")
    func concurrentUpdates() throws {
        let run = try HandlerRun()
        let statuses = ["active", "past_due", "trialing", "unpaid"]
        var deliveries = (1...40).map { minute in
            events.stripe(
                "update_\(minute)", "customer.subscription.updated", at: minute,
                events.subscription(
                    status: statuses[minute % statuses.count],
                    price: events.price("price_\(minute)", amount: minute * 100, lookupKey: "plan_\(minute)")))
        }
        var generator = SeededGenerator(seed: 40)
        deliveries.shuffle(using: &generator)
        try run.process(deliveries, concurrency: 10)
        let connection = try run.connect()
        #expect(try connection.firstValue("SELECT count(*)::text FROM sluice.dead_letters") == "0")
        #expect(
            try connection.firstValue("SELECT status || ' ' || plan FROM billing.subscriptions") == "active plan_40")
        #expect(try connection.firstValue("SELECT count(*)::text FROM billing.subscription_status_history") == "40")
        #expect(try connection.firstValue("SELECT count(*)::text FROM billing.processed_events") == "40")
    }

    @Test("an event with a missing or wrong-typed field dies at once naming the field; the others are applied")
    func malformedEvents() throws {
        let run = try HandlerRun()
        var wrongType = events.invoice("in_bad", status: "open", paid: 0, attempts: 1)
        wrongType["amount_due"] = "lots"
        var noCustomer = events.subscription(
            status: "active", price: events.price("price_x", amount: 100, lookupKey: "x"))
        noCustomer.removeValue(forKey: "customer")
        let deliveries = [
            events.stripe("bad_invoice", "invoice.finalized", at: 1, wrongType),
            events.stripe(
                "good_invoice", "invoice.finalized", at: 2,
                events.invoice("in_good", status: "open", paid: 0, attempts: 0)),
            events.stripe("bad_subscription", "customer.subscription.created", at: 3, noCustomer),
            events.clerk("bad_user", "user.updated", at: 4, ["id": "user_x", "updated_at": "yesterday"]),
        ]
        try run.process(deliveries)
        let connection = try run.connect()
        let dead = try connection.query(
            "SELECT unique_key, attempt, reason, errors -> -1 ->> 'error' FROM sluice.dead_letters ORDER BY unique_key",
            context: "dead letters")
        let rows = try dead.map { row in
            (
                try row.decode(String.self, at: 0), try row.decode(Int.self, at: 1), try row.decode(String.self, at: 2),
                try row.decode(String.self, at: 3)
            )
        }
        #expect(
            rows.map(\.0) == [
                "clerk:msg_bad_user", "stripe:evt_bad_invoice", "stripe:evt_bad_subscription",
            ])
        #expect(rows.allSatisfy { $0.1 == 1 && $0.2 == "permanent_failure" })
        #expect(rows[0].3.contains("field data.updated_at must be a number"), "\(rows[0].3)")
        #expect(
            rows[1].3.contains("event evt_bad_invoice: field data.object.amount_due must be a number"), "\(rows[1].3)")
        #expect(rows[2].3.contains("field data.object.customer is missing"), "\(rows[2].3)")
        #expect(try connection.firstValue("SELECT string_agg(id, ',') FROM billing.invoices") == "in_good")
        #expect(try connection.firstValue("SELECT count(*)::text FROM billing.processed_events") == "1")
    }

    @Test("user.deleted erases email and names from the user and from its audit entries; older events cannot undo it")
    func userDeletion() throws {
        let run = try HandlerRun()
        let created = events.clerk(
            "created", "user.created", at: 0,
            events.user("user_9", email: "grace@example.com", first: "Grace", last: "Hopper", updatedMinute: 0))
        let updated = events.clerk(
            "updated", "user.updated", at: 5,
            events.user("user_9", email: "grace@navy.mil", first: "Grace", last: "Hopper", updatedMinute: 5))
        let deleted = events.clerk(
            "deleted", "user.deleted", at: 10, ["id": "user_9", "object": "user", "deleted": true])
        // The deletion arrives before the update it follows.
        try run.process([created, deleted, updated])
        let connection = try run.connect()
        #expect(
            try connection.firstValue(
                "SELECT coalesce(email, '-') || ' ' || coalesce(first_name, '-') || ' ' || (deleted_at IS NOT NULL) FROM billing.users"
            )
                == "- - true")
        #expect(
            try connection.firstValue(
                "SELECT count(*)::text FROM billing.audit_log WHERE (before::text || after::text) ~ '(grace|Grace|Hopper)'"
            ) == "0")
        #expect(
            try connection.firstValue("SELECT count(*)::text FROM billing.audit_log WHERE action = 'erased'") == "1")
        #expect(try connection.firstValue("SELECT count(*)::text FROM billing.user_access") == "0")
    }

    @Test("ties: a paid invoice beats an open one of the same second, a deletion beats an update, in either order")
    func ties() throws {
        let open = events.stripe(
            "open", "invoice.finalized", at: 1, events.invoice("in_t", status: "open", paid: 0, attempts: 0))
        let paid = events.stripe(
            "paid", "invoice.paid", at: 1, events.invoice("in_t", status: "paid", paid: 2500, attempts: 1))
        let product = events.stripe(
            "product_updated", "product.updated", at: 2,
            ["id": "prod_t", "object": "product", "name": "T", "active": true])
        let gone = events.stripe(
            "product_deleted", "product.deleted", at: 2, ["id": "prod_t", "object": "product", "deleted": true])
        for order in [[open, paid, product, gone], [paid, open, gone, product]] {
            let run = try HandlerRun()
            try run.process(order)
            let connection = try run.connect()
            #expect(try connection.firstValue("SELECT status FROM billing.invoices") == "paid")
            #expect(try connection.firstValue("SELECT (deleted_at IS NOT NULL)::text FROM billing.products") == "true")
        }
    }

    @Test("with STRIPE_MODE=live a test-mode event is recorded as other_mode and not applied")
    func stripeMode() throws {
        let run = try HandlerRun()
        try run.process(
            [events.stripe("test_mode", "customer.created", at: 1, ["id": "cus_t", "object": "customer"])],
            stripeMode: "live")
        let connection = try run.connect()
        #expect(try connection.firstValue("SELECT outcome FROM billing.processed_events") == "other_mode")
        #expect(try connection.firstValue("SELECT count(*)::text FROM billing.customers") == "0")
    }
}
