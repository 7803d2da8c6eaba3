import Foundation
import PGQueue

/// The jobs that keep the model in step with Stripe beyond webhooks: listing missed events, reporting
/// metered usage, refetching a customer's objects.
enum StripeSyncJobs {
    static func all(support: StripeJobSupport) -> [any JobHandler] {
        [ReconcileJob(support: support), ReportUsageJob(support: support), ResyncJob(support: support)]
    }
}

/// `stripe.reconcile` (periodic, every 15 minutes by default): lists Stripe's events since the last run
/// (`/v1/events`, at most 30 days back, five minutes of overlap) and enqueues each one not processed yet as
/// a `stripe.fetched_event` job, with the webhook's unique key, so an event that also arrives by webhook
/// runs once.
/// One run at a time cluster-wide: a run that finds another still working waits 30 s.
struct ReconcileJob: JobHandler {
    let kind = "stripe.reconcile"
    let support: StripeJobSupport
    static let cursorKey = "stripe_events_cursor"

    func handle(_ job: ClaimedJob, context: JobContext) throws -> JobOutcome {
        let connection = try context.connection()
        let lock = "SELECT pg_try_advisory_lock(hashtextextended('sluice.stripe.reconcile', 0))"
        guard try connection.query(lock, context: "taking the reconcile lock").single().decode(Bool.self, at: 0) else {
            return .snooze(seconds: 30)
        }
        defer {
            _ = try? connection.query(
                "SELECT pg_advisory_unlock(hashtextextended('sluice.stripe.reconcile', 0))", context: "unlocking")
        }
        let now = Int(Date().timeIntervalSince1970)
        let store = BillingStore(connection)
        let cursor = try store.setting(Self.cursorKey).flatMap { Int($0) }
        let since = max((cursor ?? 0) - 300, now - 30 * 86_400)
        return try support.calling {
            var newest = cursor ?? since
            var listed = 0
            var enqueued = 0
            var startingAfter: String?
            repeat {
                var form = [("created[gte]", "\(since)"), ("limit", "100")]
                if let startingAfter { form.append(("starting_after", startingAfter)) }
                let page = try support.client.send(.GET, "/v1/events", form: form)
                let events = page.object["data"] as? [[String: Any]] ?? []
                listed += events.count
                let ids = events.compactMap { $0["id"] as? String }
                let processed = try store.processedStripeEvents(among: ids)
                let jobs = try events.compactMap { event -> NewJob? in
                    guard let id = event["id"] as? String, !processed.contains(id) else { return nil }
                    let payload = FetchedEventPayload(
                        eventID: id, type: event["type"] as? String, body: StripeJobSupport.json(event))
                    // Fetched from Stripe's API by Sluice itself, so it carries no signature: an owner-only kind.
                    return NewJob(
                        kind: "stripe.fetched_event",
                        payload: String(decoding: try JSONEncoder().encode(payload), as: UTF8.self),
                        queue: WebhookSource.queue, uniqueKey: WebhookSource.stripe.uniqueKey(id))
                }
                for result in try JobQueue().enqueueUnique(jobs, on: connection) {
                    if case .enqueued = result { enqueued += 1 }
                }
                newest = max(newest, events.compactMap { $0["created"] as? Int }.max() ?? newest)
                startingAfter = (page.object["has_more"] as? Bool) == true ? ids.last : nil
            } while startingAfter != nil
            try store.setSetting(
                Self.cursorKey, to: "\(newest)",
                description: "Created time (Unix s) of the newest Stripe event the stripe.reconcile job listed.")
            try support.finish(
                job, subscription: nil, result: ["listed": listed, "enqueued": enqueued, "cursor": newest],
                on: connection)
            context.logger.info(
                "Reconciled Stripe events",
                metadata: ["stripe.events.listed": "\(listed)", "stripe.events.enqueued": "\(enqueued)"])
            return .success
        }
    }
}

/// `stripe.report_usage` (periodic, every minute by default): sends each allowed use of a metered feature
/// (`billing.meters`) to Stripe's billing meter events, with the use's idempotency key as the event's
/// identifier, and marks it reported as soon as Stripe accepts it; a use is sent again only if that mark
/// was lost, and Stripe's identifier absorbs the repeat. A use Stripe refuses (a 4xx) keeps the reason in
/// `report_error` and is skipped until an operator clears it; the others go on.
struct ReportUsageJob: JobHandler {
    let kind = "stripe.report_usage"
    let support: StripeJobSupport

    func handle(_ job: ClaimedJob, context: JobContext) throws -> JobOutcome {
        let store = BillingStore(try context.connection())
        return try support.calling {
            var reported = 0
            for _ in 0..<10 {
                let uses = try store.unreportedUses(limit: 100)
                for use in uses {
                    let key = use.idempotencyKey
                    do {
                        _ = try support.client.send(
                            .POST, "/v1/billing/meter_events",
                            form: [
                                ("event_name", use.eventName), ("payload[stripe_customer_id]", use.customerID),
                                ("payload[value]", "\(use.quantity)"), ("identifier", key),
                                ("timestamp", "\(use.recordedAt)"),
                            ], idempotencyKey: "sluice-usage-\(key)")
                    } catch let error as StripeError where error.description.contains("resource_already_exists") {
                        // Stripe already has this identifier: it was reported and the mark was lost.
                    } catch let error as StripeError where error.action == .fail {
                        // One refused use (a deleted customer, a meter that does not exist) must not stop the
                        // others behind it: keep why, and leave it to an operator.
                        try store.markReportRefused(key, reason: error.description)
                        context.logger.warning(
                            "Stripe refused a usage report", metadata: ["usage.key": "\(key)", "error": "\(error)"])
                        continue
                    }
                    try store.markReported(key)
                    reported += 1
                }
                if uses.count < 100 { break }
            }
            if reported > 0 {
                context.logger.info("Reported usage to Stripe", metadata: ["usage.reported.count": "\(reported)"])
            }
            return .success
        }
    }
}

/// `stripe.resync`: `{"customer_id"?}`: refetches the customer (or every customer), its subscriptions
/// (`status=all`) and open invoices, and applies them with the usual version rules, at the response's
/// time. `sluice resync` enqueues it and prints its result.
struct ResyncJob: JobHandler {
    let kind = "stripe.resync"
    let support: StripeJobSupport

    func handle(_ job: ClaimedJob, context: JobContext) throws -> JobOutcome {
        let payload = try JobPayload.decode(ResyncPayload.self, from: job)
        let connection = try context.connection()
        return try support.calling {
            var customers: [[String: Any]] = []
            var fetchedAt = Int(Date().timeIntervalSince1970)
            if let id = payload.customerID?.value {
                let customer = try support.client.send(.GET, "/v1/customers/\(StripeClient.pathID(id))")
                customers = [customer.object]
                fetchedAt = customer.time
            } else {
                customers = try list("/v1/customers", [])
            }
            var counts = ["customers": 0, "subscriptions": 0, "invoices": 0]
            for customer in customers {
                guard let id = customer["id"] as? String else { continue }
                try apply(customer, type: "customer.updated", at: fetchedAt, job: job, on: connection)
                counts["customers", default: 0] += 1
                for subscription in try list("/v1/subscriptions", [("customer", id), ("status", "all")]) {
                    try apply(
                        subscription, type: "customer.subscription.updated", at: fetchedAt, job: job, on: connection)
                    counts["subscriptions", default: 0] += 1
                }
                for invoice in try list("/v1/invoices", [("customer", id), ("status", "open")]) {
                    try apply(invoice, type: "invoice.updated", at: fetchedAt, job: job, on: connection)
                    counts["invoices", default: 0] += 1
                }
            }
            try support.finish(job, subscription: nil, result: counts, on: connection)
            return .success
        }
    }

    /// Every object of a list endpoint, page by page.
    private func list(_ path: String, _ filters: [(String, String)]) throws -> [[String: Any]] {
        var objects: [[String: Any]] = []
        var startingAfter: String?
        repeat {
            var form = filters + [("limit", "100")]
            if let startingAfter { form.append(("starting_after", startingAfter)) }
            let page = try support.client.send(.GET, path, form: form)
            let data = page.object["data"] as? [[String: Any]] ?? []
            objects += data
            startingAfter = (page.object["has_more"] as? Bool) == true ? data.last?["id"] as? String : nil
        } while startingAfter != nil
        return objects
    }

    private func apply(
        _ object: [String: Any], type: String, at time: Int, job: ClaimedJob, on connection: PostgresConnection
    )
        throws
    {
        let event: [String: Any] = [
            "id": "resync:\(job.id):\(object["id"] as? String ?? "?")", "object": "event", "type": type,
            "created": time,
            "livemode": object["livemode"] as? Bool ?? false, "data": ["object": object],
        ]
        try BillingStore(connection).applyStripeEvent(StripeJobSupport.json(event))
    }
}
