import Foundation
import Jobs
import Logging
import PGQueue
import Synchronization

/// The pool's background duties, on one thread with one connection:
/// - heartbeat: extend the leases of running jobs (every third of the lease);
/// - timeouts: record a timeout failure for a job past its kind's execution timeout and stop extending it;
/// - rescue: return expired leases of dead workers to the queue (one rescuer per database at a time);
/// - housekeeping: prune what is past its retention, trim long error histories (every minute, or every
///   second while expired rows are left over);
/// - queue statistics for the metrics, and per-kind settings from `sluice.kinds` (every 10 s / minute);
/// - the business gauges, from the one process holding their advisory lock (every minute);
/// - periodic jobs: each schedule's job for the current slot (every worker tries; the unique key lets one in).
final class PoolMaintenance: Sendable {
    private let settings: PoolSettings
    private let queue: JobQueue
    private let registry: JobRegistry
    private let state: PoolStateStore
    private let flusher: OutcomeFlusher
    private let metrics: SluiceMetrics
    private let logger: Logger
    private let isStopped = Atomic<Bool>(false)
    private let wake = WakeSignal()
    private let finished = DispatchSemaphore(value: 0)

    init(
        settings: PoolSettings, queue: JobQueue, registry: JobRegistry, state: PoolStateStore,
        flusher: OutcomeFlusher, metrics: SluiceMetrics, logger: Logger
    ) {
        self.settings = settings
        self.queue = queue
        self.registry = registry
        self.state = state
        self.flusher = flusher
        self.metrics = metrics
        self.logger = logger
    }

    func start() {
        let thread = Thread { [self] in
            run()
            finished.signal()
        }
        thread.name = "sluice.maintenance"
        thread.start()
    }

    func stop() {
        isStopped.store(true, ordering: .releasing)
        wake.signal()
        finished.wait()
    }

    private func run() {
        let lease = settings.leaseSeconds
        let heartbeatEvery = Duration.milliseconds(Int(lease * 1000 / 3))
        let rescueEvery = Duration.milliseconds(Int(max(0.5, lease / 2) * 1000))
        let tick = min(1.0, lease / 6)
        var connection: PostgresConnection?
        var nextHeartbeat = ContinuousClock.now
        var nextRescue = ContinuousClock.now
        var nextStats = ContinuousClock.now
        var nextHousekeeping = ContinuousClock.now
        var nextBusiness = ContinuousClock.now
        var enqueuedSlots: [String: Date] = [:]

        while !isStopped.load(ordering: .acquiring) {
            let now = ContinuousClock.now
            recordTimeouts(now: now)
            do {
                let open =
                    try connection ?? PostgresConnection(connectionString: settings.connectionString, logger: logger)
                connection = open
                if now >= nextHeartbeat {
                    try heartbeat(on: open)
                    nextHeartbeat = now + heartbeatEvery
                }
                if now >= nextRescue {
                    try rescue(on: open)
                    nextRescue = now + rescueEvery
                }
                if now >= nextStats {
                    metrics.queues(try queue.stats(on: open))
                    nextStats = now + .seconds(10)
                }
                if now >= nextBusiness {
                    // One process at a time publishes them (an advisory lock), so a dashboard reads them
                    // with max without (instance) and a failover neither doubles nor loses them. A figure
                    // that cannot be read waits for the next minute and holds up nothing else here.
                    nextBusiness = now + .seconds(60)
                    do {
                        let store = BillingStore(open)
                        if try store.holdBusinessGaugeLock() { metrics.business(try store.businessGauges()) }
                    } catch {
                        logger.warning("Could not read the business gauges", metadata: ["error": "\(error)"])
                    }
                }
                for schedule in settings.periodic {
                    let slot = schedule.slot(containing: Date())
                    guard enqueuedSlots[schedule.kind] != slot else { continue }
                    if try queue.enqueue(schedule, slot: slot, on: open) {
                        logger.debug(
                            "Periodic job enqueued",
                            metadata: ["job.kind": "\(schedule.kind)", "periodic.slot": "\(slot)"])
                    }
                    enqueuedSlots[schedule.kind] = slot
                }
                if now >= nextHousekeeping {
                    let backlog = try housekeeping(on: open)
                    nextHousekeeping = now + .seconds(backlog ? 1 : 60)
                }
            } catch {
                logger.warning("Pool maintenance failed; retrying", metadata: ["error": "\(error)"])
            }
            wake.wait(timeout: tick)
        }
        connection?.close()
    }

    private func recordTimeouts(now: ContinuousClock.Instant) {
        let expired = state.withLock { $0.expireTimeouts(now: now) }
        for held in expired {
            let job = held.job
            let timeout = Double(((held.deadline ?? now) - (held.startedAt ?? now)).nanoseconds) / 1e9
            let backoff = registry.handler(for: job.kind)?.backoff ?? .standard
            logger.warning(
                "Job ran past its timeout; recording a failure (its slot stays busy until the handler returns)",
                metadata: [
                    "job.id": "\(job.id)", "job.kind": "\(job.kind)", "job.queue": "\(job.queue)",
                    "job.attempt": "\(job.attempt)", "timeout_s": "\(timeout)",
                ])
            metrics.timedOut(queue: job.queue, kind: job.kind)
            flusher.fail(
                .init(
                    failure: JobFailure(
                        lease: job.lease, kind: .timeout, message: "ran past its \(timeout) s timeout",
                        retryIn: backoff.delay(afterAttempt: job.attempt)),
                    queue: job.queue, kind: job.kind))
        }
    }

    private func heartbeat(on connection: PostgresConnection) throws(PostgresError) {
        // A claimed job still waiting for a slot after two leases is given back (see leasesToExtend).
        let stale = ContinuousClock.now - .milliseconds(Int(settings.leaseSeconds * 2000))
        let (leases, giveBack) = state.withLock { $0.leasesToExtend(staleBefore: stale) }
        if !giveBack.isEmpty {
            logger.info(
                "Giving back claimed jobs that waited two leases for a slot",
                metadata: ["jobs.count": "\(giveBack.count)"])
            flusher.release(giveBack)
        }
        guard !leases.isEmpty else { return }
        let extended = try queue.heartbeat(leases, on: connection)
        let lost = state.withLock { $0.markLost(leases, extended: extended) }
        guard !lost.isEmpty else { return }
        for lease in lost {
            logger.warning(
                "Lease lost: the job was rescued while it ran here; its result will be fenced off",
                metadata: ["job.id": "\(lease.id)", "job.attempt": "\(lease.attempt)"])
        }
    }

    private func rescue(on connection: PostgresConnection) throws(PostgresError) {
        let report = try queue.rescueExpired(on: connection)
        guard !report.rescued.isEmpty || !report.dead.isEmpty else { return }
        metrics.rescued(report.rescued.count + report.dead.count)
        logger.info(
            "Rescued jobs whose worker stopped renewing their lease",
            metadata: ["rescued.count": "\(report.rescued.count)", "dead.count": "\(report.dead.count)"])
    }

    /// Prunes, trims and re-reads the kinds' timeouts; returns true when a table still has expired rows
    /// waiting, so the next round comes in a second instead of a minute.
    private func housekeeping(on connection: PostgresConnection) throws(PostgresError) -> Bool {
        // Short transactions of at most a batch per table, for at most half a second a round: this thread
        // also renews leases, and a backlog (a million expired rows after raising a retention) is worked
        // off over many rounds instead of holding locks or starving the heartbeat.
        let budget = ContinuousClock.now + .milliseconds(500)
        let batchSize = 5000
        var pruned: [String: Int] = [:]
        var backlog = false
        repeat {
            let batch = try queue.prune(batchSize: batchSize, on: connection)
                .merging(BillingStore(connection).prune(batchSize: batchSize), uniquingKeysWith: +)
            pruned.merge(batch, uniquingKeysWith: +)
            backlog = batch.values.contains { $0 >= batchSize }
        } while backlog && ContinuousClock.now < budget
        for (table, count) in pruned where count > 0 { metrics.pruned(table: table, count: count) }
        let trimmed = try queue.trimErrorHistory(keep: settings.errorHistoryLimit, batchSize: 1000, on: connection)
        let timeouts = try queue.kindTimeouts(on: connection)
        state.withLock { $0.kindTimeouts = timeouts }
        let prunedAny = pruned.values.contains { $0 > 0 }
        if prunedAny || trimmed > 0 {
            var metadata: Logger.Metadata = ["error_histories.trimmed": "\(trimmed)"]
            for (table, count) in pruned where count > 0 { metadata["\(table).pruned"] = "\(count)" }
            logger.info("Housekeeping", metadata: metadata)
        }
        return backlog
    }
}
