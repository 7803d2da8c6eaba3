import Jobs
import Metrics
import PGQueue
import Synchronization

/// The Prometheus metrics a `sluice` process records, made from a `MetricsFactory` so tests can pass
/// their own. Metric objects are cached per label set, so the hot path does a dictionary lookup, not a
/// factory call.
final class SluiceMetrics: Sendable {
    private let factory: any MetricsFactory
    private let counters = Mutex<[String: Counter]>([:])
    private let timers = Mutex<[String: Metrics.Timer]>([:])
    private let gauges = Mutex<[String: Gauge]>([:])
    private let knownQueues = Mutex<Set<String>>([])

    init(factory: any MetricsFactory) {
        self.factory = factory
    }

    func completed(queue: String, kind: String, count: Int) {
        counter("sluice_jobs_completed_total", queue: queue, kind: kind).increment(by: count)
    }

    /// An attempt failed and the job will be retried.
    func failed(queue: String, kind: String) {
        counter("sluice_jobs_failed_total", queue: queue, kind: kind).increment()
    }

    func deadLettered(queue: String, kind: String) {
        counter("sluice_jobs_dead_lettered_total", queue: queue, kind: kind).increment()
    }

    /// A handler asked to run its job later (a rate limit, an event dated in the future).
    func snoozed(queue: String, kind: String) {
        counter("sluice_jobs_snoozed_total", queue: queue, kind: kind).increment()
    }

    func timedOut(queue: String, kind: String) {
        counter("sluice_jobs_timed_out_total", queue: queue, kind: kind).increment()
    }

    func rescued(_ count: Int) {
        counter("sluice_jobs_rescued_total", dimensions: []).increment(by: count)
    }

    /// Rows that housekeeping deleted from a table past its retention.
    func pruned(table: String, count: Int) {
        counter("sluice_pruned_rows_total", dimensions: [("table", table)]).increment(by: count)
    }

    /// The handler-duration histogram of a kind; callers cache it.
    func durationTimer(kind: String) -> Metrics.Timer {
        timer("sluice_job_duration_seconds", dimensions: [("kind", kind)])
    }

    /// Pool occupancy: slots running a handler, and slots free.
    func pool(busy: Int, free: Int) {
        gauge("sluice_pool_busy_slots", dimensions: []).record(busy)
        gauge("sluice_pool_free_slots", dimensions: []).record(free)
    }

    /// Queue depth and age from `sluice.queue_stats`; queues that emptied out drop to zero.
    func queues(_ stats: [QueueStats]) {
        let seen = Set(stats.map(\.queue))
        let gone = knownQueues.withLock { known in
            let gone = known.subtracting(seen)
            known = seen
            return gone
        }
        for stat in stats {
            let queue = [("queue", stat.queue)]
            gauge("sluice_queue_available", dimensions: queue).record(stat.available)
            gauge("sluice_queue_scheduled", dimensions: queue).record(stat.scheduled)
            gauge("sluice_queue_running", dimensions: queue).record(stat.running)
            gauge("sluice_queue_dead", dimensions: queue).record(stat.dead)
            gauge("sluice_queue_paused", dimensions: queue).record(stat.paused ? 1 : 0)
            gauge("sluice_queue_oldest_available_seconds", dimensions: queue).record(stat.oldestAvailableAge ?? 0)
        }
        for queue in gone {
            for name in [
                "sluice_queue_available", "sluice_queue_scheduled", "sluice_queue_running", "sluice_queue_dead",
                "sluice_queue_paused", "sluice_queue_oldest_available_seconds",
            ] {
                gauge(name, dimensions: [("queue", queue)]).record(0)
            }
        }
    }

    /// One request of the app's API: its operation and status, and how long it took.
    /// Counters an alert takes `increase` or `rate` of, at zero from the start: a series that first appears
    /// at its first increment hides that increment from both.
    func primeCounters() {
        for result in ["delivered", "failed", "gone", "dead"] {
            counter("sluice_outbound_deliveries_total", dimensions: [("result", result)]).increment(by: 0)
        }
        for reason in ["gone", "failing"] {
            counter("sluice_outbound_endpoints_disabled_total", dimensions: [("reason", reason)]).increment(by: 0)
        }
        for outcome in ["ok", "client_error", "server_error", "rate_limited", "network"] {
            counter("sluice_stripe_requests_total", dimensions: [("outcome", outcome)]).increment(by: 0)
        }
    }

    /// The business gauges, from the one process holding their lock.
    func business(_ gauges: BillingStore.BusinessGauges) {
        for (currency, amount) in gauges.mrr {
            gauge("sluice_business_mrr", dimensions: [("currency", currency)]).record(amount)
        }
        for (status, count) in gauges.subscriptionsByStatus {
            gauge("sluice_business_subscriptions", dimensions: [("status", status)]).record(count)
        }
        gauge("sluice_business_past_due", dimensions: []).record(gauges.pastDue)
        gauge("sluice_business_payment_failures_last_hour", dimensions: []).record(gauges.paymentFailuresLastHour)
    }

    func apiRequest(operation: String, status: Int, nanoseconds: Int64) {
        counter("sluice_api_requests_total", dimensions: [("operation", operation), ("status", "\(status)")])
            .increment()
        timer("sluice_api_request_duration_seconds", dimensions: [("operation", operation)])
            .recordNanoseconds(nanoseconds)
    }

    /// A request of the app's API refused before its handler, or by its credentials: `reason` is
    /// `missing`, `invalid`, `scope`, `rate_limited` or `too_large`.
    func apiRefused(reason: String) {
        counter("sluice_api_auth_failures_total", dimensions: [("reason", reason)]).increment()
    }

    /// One webhook request and what became of it.
    func webhook(source: WebhookSource, outcome: WebhookOutcome) {
        counter("sluice_webhooks_total", dimensions: [("source", source.name), ("outcome", outcome.rawValue)])
            .increment()
    }

    /// Time from a webhook request's arrival to its answer, commit included.
    func webhookDuration(source: WebhookSource) -> Metrics.Timer {
        timer("sluice_webhook_duration_seconds", dimensions: [("source", source.name)])
    }

    private func counter(_ label: String, dimensions: [(String, String)]) -> Counter {
        Self.cached(label, dimensions, in: counters) { Counter(label: label, dimensions: dimensions, factory: factory) }
    }

    private func counter(_ label: String, queue: String, kind: String) -> Counter {
        counter(label, dimensions: [("queue", queue), ("kind", kind)])
    }

    private func timer(_ label: String, dimensions: [(String, String)]) -> Metrics.Timer {
        Self.cached(label, dimensions, in: timers) {
            Metrics.Timer(label: label, dimensions: dimensions, factory: factory)
        }
    }

    private func gauge(_ label: String, dimensions: [(String, String)]) -> Gauge {
        Self.cached(label, dimensions, in: gauges) { Gauge(label: label, dimensions: dimensions, factory: factory) }
    }

    /// The metric for a label and dimensions from `cache`, made by `make` the first time.
    private static func cached<Metric: Sendable>(
        _ label: String, _ dimensions: [(String, String)], in cache: borrowing Mutex<[String: Metric]>,
        make: () -> Metric
    ) -> Metric {
        let key = ([label] + dimensions.map { "\($0.0)=\($0.1)" }).joined(separator: "|")
        return cache.withLock { metrics in
            if let metric = metrics[key] { return metric }
            let metric = make()
            metrics[key] = metric
            return metric
        }
    }
}
