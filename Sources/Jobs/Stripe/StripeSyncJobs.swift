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
        let cursor = try connection.query(
            "SELECT value::bigint FROM billing.settings WHERE key = $1", [Self.cursorKey], context: "reading the cursor"
        ).first?.decode(Int.self, at: 0)
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
                let processed = Set(
                    try connection.query(
                        "SELECT event_id FROM billing.processed_events WHERE source = 'stripe' AND event_id = ANY($1::text[])",
                        [ids], context: "finding processed events"
                    ).map { try $0.decode(String.self, at: 0) })
                let jobs = events.compactMap { event -> NewJob? in
                    guard let id = event["id"] as? String, !processed.contains(id) else { return nil }
                    let payload: [String: Any] = [
                        "source": "reconcile", "event_id": id, "type": event["type"] ?? NSNull(),
                        "body": StripeJobSupport.json(event),
                    ]
                    // Fetched from Stripe's API by Sluice itself, so it carries no signature: an owner-only kind.
                    return NewJob(
                        kind: "stripe.fetched_event", payload: StripeJobSupport.json(payload), queue: "webhooks",
                        uniqueKey: "stripe:\(id)")
                }
                for result in try JobQueue().enqueueUnique(jobs, on: connection) {
                    if case .enqueued = result { enqueued += 1 }
                }
                newest = max(newest, events.compactMap { $0["created"] as? Int }.max() ?? newest)
                startingAfter = (page.object["has_more"] as? Bool) == true ? ids.last : nil
            } while startingAfter != nil
            try connection.query(
                """
                INSERT INTO billing.settings (key, value, description)
                VALUES ($1, $2, 'Created time (Unix s) of the newest Stripe event the stripe.reconcile job listed.')
                ON CONFLICT (key) DO UPDATE SET value = excluded.value
                """, [Self.cursorKey, "\(newest)"], context: "storing the cursor")
            try support.finish(
                job, subscription: nil, result: ["listed": listed, "enqueued": enqueued, "cursor": newest],
                on: connection)
            context.logger.info(
                "Reconciled Stripe events", metadata: ["listed": "\(listed)", "enqueued": "\(enqueued)"])
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
        let connection = try context.connection()
        return try support.calling {
            var reported = 0
            for _ in 0..<10 {
                let uses = try connection.query(
                    """
                    SELECT e.idempotency_key, e.quantity, extract(epoch FROM e.recorded_at)::bigint, m.event_name, l.customer_id
                    FROM billing.usage_events e
                    JOIN billing.meters m ON m.feature = e.feature
                    JOIN billing.customer_links l ON l.user_id = e.user_id AND l.unlinked_at IS NULL
                    WHERE e.reported_at IS NULL AND e.allowed AND e.report_error IS NULL
                    ORDER BY e.recorded_at
                    LIMIT 100
                    """, context: "finding unreported usage")
                for use in uses {
                    let key = try use.decode(String.self, at: 0)
                    do {
                        _ = try support.client.send(
                            .POST, "/v1/billing/meter_events",
                            form: [
                                ("event_name", try use.decode(String.self, at: 3)),
                                ("payload[stripe_customer_id]", try use.decode(String.self, at: 4)),
                                ("payload[value]", "\(try use.decode(Int64.self, at: 1))"), ("identifier", key),
                                ("timestamp", "\(try use.decode(Int64.self, at: 2))"),
                            ], idempotencyKey: "sluice-usage-\(key)")
                    } catch let error as StripeError where error.description.contains("resource_already_exists") {
                        // Stripe already has this identifier: it was reported and the mark was lost.
                    } catch let error as StripeError where error.action == .fail {
                        // One refused use (a deleted customer, a meter that does not exist) must not stop the
                        // others behind it: keep why, and leave it to an operator.
                        try connection.query(
                            "UPDATE billing.usage_events SET report_error = $2 WHERE idempotency_key = $1",
                            [key, error.description], context: "recording a refused usage report")
                        context.logger.warning(
                            "Stripe refused a usage report", metadata: ["key": "\(key)", "error": "\(error)"])
                        continue
                    }
                    try connection.query(
                        "UPDATE billing.usage_events SET reported_at = now() WHERE idempotency_key = $1", [key],
                        context: "marking usage reported")
                    reported += 1
                }
                if uses.count < 100 { break }
            }
            if reported > 0 { context.logger.info("Reported usage to Stripe", metadata: ["uses": "\(reported)"]) }
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
        let payload = try support.payload(job)
        let connection = try context.connection()
        return try support.calling {
            var customers: [[String: Any]] = []
            var fetchedAt = Int(Date().timeIntervalSince1970)
            if let id = try support.string(payload, "customer_id") {
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
        try connection.query(
            "SELECT billing.apply_stripe_event($1::jsonb)", [StripeJobSupport.json(event)],
            context: "applying a refetched \(type)")
    }
}
