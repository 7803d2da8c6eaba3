import Foundation
import Jobs
import Logging
import PGQueue
import Synchronization

/// Runs jobs: a fetcher claims batches when slots are free, each job runs on a slot's serial queue under
/// its kind's timeout, outcomes are recorded in batches, and a maintenance thread extends leases, rescues
/// expired ones, and keeps the tables trim.
///
/// Connections: one for the fetcher, one for outcomes, one for maintenance, one LISTEN connection, and one
/// per slot whose handlers use the database (opened on first use): 4 + up to `concurrency`.
final class WorkerPool: Sendable {
    let settings: PoolSettings
    let queue: JobQueue
    let registry: JobRegistry
    let metrics: SluiceMetrics
    let logger: Logger
    let state: PoolStateStore
    let slots: [Slot]
    let wake = WakeSignal()
    let flusher: OutcomeFlusher
    private let fetcherDone = DispatchSemaphore(value: 0)
    private let maintenance: PoolMaintenance
    private let listener: PostgresListener

    init(settings: PoolSettings, registry: JobRegistry, metrics: SluiceMetrics, logger: Logger) {
        self.settings = settings
        self.registry = registry
        self.metrics = metrics
        self.logger = logger
        let queue = JobQueue(
            leaseSeconds: settings.leaseSeconds, uniqueRetentionSeconds: settings.uniqueRetentionSeconds)
        self.queue = queue

        var lanes: [Lane] = []
        var slots: [Slot] = []
        func addLane(_ name: String?, _ size: Int) {
            let indices = Array(slots.count..<(slots.count + size))
            for index in indices {
                slots.append(Slot(index: index, connectionString: settings.connectionString, logger: logger))
            }
            lanes.append(Lane(queue: name, slots: indices))
        }
        switch settings.queues {
        case .all:
            // A delivery can wait 10 s on a slow endpoint: in the lane of every queue, a struggling endpoint
            // would fill every slot and hold up the billing model's events. Its own slots come out of
            // SLUICE_CONCURRENCY, which stays the most jobs running at once.
            let outbound =
                settings.excludedQueues.contains(OutboundDeliveryJob.queue)
                ? 0 : Self.outboundSlots(concurrency: settings.concurrency)
            addLane(nil, settings.concurrency - outbound)
            if outbound > 0 { addLane(OutboundDeliveryJob.queue, outbound) }
        case .named(let named):
            for lane in named where !settings.excludedQueues.contains(lane.name) {
                addLane(lane.name, lane.concurrency)
            }
        }
        self.slots = slots
        let handlerTimeouts = Dictionary(
            uniqueKeysWithValues: registry.kinds.map { ($0, registry.handler(for: $0)?.timeoutSeconds ?? 300) })
        let state = PoolStateStore(
            PoolState(
                lanes: lanes, handlerTimeouts: handlerTimeouts, excludedQueues: settings.excludedQueues, now: .now))
        self.state = state
        let wake = self.wake
        self.flusher = OutcomeFlusher(
            queue: queue, connectionString: settings.connectionString, metrics: metrics, logger: logger
        ) { delays in
            // Retries and snoozes this worker recorded: wake the fetcher when each is due.
            state.withLock { $0.scheduleWakes(in: delays, now: .now) }
            wake.signal()
        }
        self.maintenance = PoolMaintenance(
            settings: settings, queue: queue, registry: registry, state: state, flusher: flusher, metrics: metrics,
            logger: logger)

        self.listener = PostgresListener(
            connectionString: settings.connectionString, channels: [JobQueue.notificationChannel], logger: logger
        ) { event in
            switch event {
            case .connected:
                // Notifications sent while the connection was down are lost: every lane looks again.
                state.withLock { state in
                    state.quietSince.removeAll()
                    state.lastDiscovery = nil
                }
                wake.signal()
            case .notification(let note):
                if state.withLock({ $0.notified(queue: note.payload) }) { wake.signal() }
            }
        }
    }

    /// The slots of `SLUICE_CONCURRENCY` that queue `outbound` gets to itself when every queue is worked
    /// (`SLUICE_QUEUES` unset or `all`): a fifth, at least one, and none with a single slot, which the
    /// deliveries then share with every other queue.
    static func outboundSlots(concurrency: Int) -> Int { concurrency >= 2 ? (concurrency + 4) / 5 : 0 }

    /// Starts claiming and running jobs in the background; connection failures are retried, not thrown.
    func start() {
        for excluded in settings.excludedQueues.sorted() {
            logger.warning(
                "Not claiming from a queue: its jobs need the webhook secrets to verify their events",
                metadata: ["job.queue": "\(excluded)", "fix": "set STRIPE_WEBHOOK_SECRET or CLERK_WEBHOOK_SECRET"])
        }
        logger.info(
            "Worker pool starting",
            metadata: [
                "worker.id": "\(queue.workerID)", "queues": "\(settings.queues)", "slots.count": "\(slots.count)",
                "kinds": "\(registry.kinds.joined(separator: ","))",
            ])
        flusher.start()
        listener.start()
        maintenance.start()
        let fetcher = Thread { [self] in
            fetchLoop()
            fetcherDone.signal()
        }
        fetcher.name = "sluice.fetcher"
        fetcher.start()
    }

    /// True while the fetcher loop is turning (it ticks at least every poll interval).
    func isHealthy(within seconds: Double) -> Bool {
        let tick = state.withLock { $0.lastFetcherTick }
        return ContinuousClock.now - tick < .seconds(seconds)
    }

    /// Graceful stop: claims nothing more, lets running jobs finish for up to `gracePeriod` seconds, then
    /// returns the leases of those still running, and of claimed jobs no slot started, so another worker
    /// takes them at once. Blocks.
    func stop(gracePeriod: Double) {
        state.withLock { $0.isStopping = true }
        wake.signal()
        fetcherDone.wait()
        // Buffered jobs go back at once; they must not wait for the running ones.
        let buffered = state.withLock { $0.releaseBuffered() }
        let deadline = ContinuousClock.now + .milliseconds(Int(gracePeriod * 1000))
        var running = state.withLock { $0.runningCount }
        if running > 0 {
            logger.info(
                "Waiting for running jobs", metadata: ["jobs.count": "\(running)", "grace_s": "\(gracePeriod)"])
        }
        while running > 0 && ContinuousClock.now < deadline {
            Thread.sleep(forTimeInterval: 0.01)
            running = state.withLock { $0.runningCount }
        }
        let unfinished = state.withLock { $0.unfinishedLeases }
        maintenance.stop()
        flusher.stop(releasing: buffered + unfinished, timeout: 3)
        listener.stop()
        logger.info(
            "Worker pool stopped",
            metadata: [
                "released.count": "\(buffered.count + unfinished.count)", "still_running.count": "\(unfinished.count)",
            ])
    }

    // MARK: Fetching

    /// Claims for every lane whose slots or buffer want jobs; waits for a notification, a free slot or the
    /// poll interval when there is nothing to do. The decisions are ``PoolState``'s; this loop does the
    /// talking.
    ///
    /// Completions go to the flusher, not into the claim statement: on its own connection the flusher's
    /// DELETE runs in a second backend while this one claims, where one statement doing both kept every
    /// job's two writes on one core of PostgreSQL.
    private func fetchLoop() {
        var connection: PostgresConnection?
        var retryDelay = 0.05
        var schemaGate = SchemaGate()
        var needsKindTimeouts = true
        // Per queue: where the next claim starts, past the dead prefix a held snapshot leaves (ClaimCursor).
        var cursors: [String: ClaimCursor] = [:]
        let cursor = ClaimCursor(rescanInterval: .milliseconds(Int64(settings.claimRescanSeconds * 1000)))
        while let claims = state.withLock({ $0.claims(now: .now) }) {
            guard !claims.isEmpty else {
                idle("no slot or buffer wants jobs")
                continue
            }
            do {
                // A connection that broke reconnects on its next call; either way, look at the schema again.
                let reconnected = connection?.isConnected != true
                let open =
                    try connection
                    ?? PostgresConnection(
                        connectionString: settings.connectionString, logger: logger,
                        sessionSettings: JobQueue.sessionSettings)
                connection = open
                if reconnected { needsKindTimeouts = true }
                if schemaGate.isDue(at: .now, reconnected: reconnected) {
                    let notice = schemaGate.record(try InstalledSchema.read(on: open), at: .now)
                    if let notice { logger.log(level: notice.level, notice.message, metadata: notice.metadata) }
                }
                guard schemaGate.allowsClaiming else {
                    wake.wait(timeout: settings.pollSeconds)
                    continue
                }
                if needsKindTimeouts {
                    // Per-kind timeouts before the first claim, so no job starts with the default by mistake.
                    let timeouts = try queue.kindTimeouts(on: open)
                    state.withLock { $0.kindTimeouts = timeouts }
                    needsKindTimeouts = false
                }
                if state.withLock({ $0.needsDiscovery(for: claims, now: .now, pollSeconds: settings.pollSeconds) }) {
                    let active = try queue.activeQueues(on: open)
                    state.withLock { $0.discovered(active, now: .now) }
                }
                var claimedAny = false
                for claim in claims {
                    var want = claim.want
                    for name in state.withLock({ $0.queues(for: claim) }) where want > 0 {
                        let start = cursors[name, default: cursor].start(now: .now)
                        let step = try queue.claim(from: name, limit: want, completing: [], after: start, on: open)
                        cursors[name, default: cursor].record(
                            start: start, wanted: want, claimed: step.claimed.count, last: step.last, now: .now)
                        if logger.logLevel <= .trace {
                            logger.trace(
                                "Claimed",
                                metadata: [
                                    "job.queue": "\(name)", "claim.want": "\(want)",
                                    "claim.got": "\(step.claimed.count)",
                                ])
                        }
                        let starts = state.withLock { $0.accept(step.claimed, from: name, lane: claim.lane, now: .now) }
                        for start in starts { run(start.job, lane: claim.lane, slot: slots[start.slot]) }
                        want -= step.claimed.count
                        claimedAny = claimedAny || !step.claimed.isEmpty
                    }
                }
                retryDelay = 0.05
                if !claimedAny { idle("nothing to claim") }
            } catch {
                logger.warning(
                    "Could not claim jobs; retrying",
                    metadata: ["error": "\(error)", "retry_in_s": "\(String(format: "%.2f", retryDelay))"])
                wake.wait(timeout: retryDelay * Double.random(in: 0.5...1))
                retryDelay = min(retryDelay * 2, 5)
            }
        }
        connection?.close()
    }

    /// Waits for a notification, a freed slot, a retry coming due or the poll interval.
    private func idle(_ reason: @autoclosure () -> String) {
        let wait = state.withLock { $0.idleWait(now: .now, pollSeconds: settings.pollSeconds) }
        if logger.logLevel <= .trace {
            logger.trace("Fetcher waiting: \(reason())", metadata: ["wait_s": "\(wait)"])
        }
        wake.wait(timeout: wait)
    }

    /// Runs `first` on the slot, then keeps taking jobs from the lane's buffer until it is empty.
    ///
    /// Fast jobs are taken in chunks so that the pool's lock and the flusher see one visit per chunk rather
    /// than one per job; a chunk only forms when the buffer holds more jobs than the lane has slots, which
    /// the prefetch allows only for jobs that finish in milliseconds.
    private func run(_ first: ClaimedJob, lane: Int, slot: Slot) {
        slot.queue.async { [self] in
            var chunk = [first]
            var results: [AttemptResult] = []
            while true {
                results.removeAll(keepingCapacity: true)
                for job in chunk { results.append(execute(job, on: slot)) }
                let (accepted, next, wantsRefill) = state.withLock {
                    $0.finish(chunk, results: results, lane: lane, slot: slot.index, now: .now)
                }
                flusher.submit(accepted)
                if wantsRefill { wake.signal() }
                guard !next.isEmpty else { break }
                chunk = next
            }
            let (busy, free) = state.withLock { ($0.slotCount - $0.freeSlotCount, $0.freeSlotCount) }
            metrics.pool(busy: busy, free: free)
        }
    }
}
