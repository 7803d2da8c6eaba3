import Foundation
import Jobs
import Logging
import PGQueue
import Synchronization

/// Settings of a pool, derived from the process's ``Configuration``.
struct PoolSettings: Sendable {
    var connectionString: String?
    var queues: QueueSelection
    var concurrency: Int
    var leaseSeconds: Double
    var pollSeconds: Double
    var uniqueRetentionSeconds: Double
    var errorHistoryLimit: Int
    /// Kinds enqueued once per slot of their interval (`SLUICE_PERIODIC`).
    var periodic: [PeriodicSchedule] = []
    /// Queues this pool never claims from, whatever `queues` says (`webhooks` without webhook secrets).
    var excludedQueues: Set<String> = []
}

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
            lanes.append(Lane(queue: name, slots: indices, freeSlots: indices.reversed()))
        }
        switch settings.queues {
        case .all: addLane(nil, settings.concurrency)
        case .named(let named):
            for lane in named where !settings.excludedQueues.contains(lane.name) {
                addLane(lane.name, lane.concurrency)
            }
        }
        self.slots = slots
        let state = PoolStateStore(PoolState(lanes: lanes))
        self.state = state
        let wake = self.wake
        self.flusher = OutcomeFlusher(
            queue: queue, connectionString: settings.connectionString, metrics: metrics, logger: logger
        ) { delays in
            // Retries and snoozes this worker recorded: wake the fetcher when each is due.
            state.withLock { $0.scheduleWakes(in: delays) }
            wake.signal()
        }
        self.maintenance = PoolMaintenance(
            settings: settings, queue: queue, registry: registry, state: state, flusher: flusher, metrics: metrics,
            logger: logger)

        let watchesAllQueues = lanes.contains { $0.queue == nil }
        let laneQueues = Set(lanes.compactMap(\.queue))
        self.listener = PostgresListener(
            connectionString: settings.connectionString, channels: [JobQueue.notificationChannel], logger: logger
        ) { event in
            switch event {
            case .connected:
                wake.signal()
            case .notification(let note):
                if watchesAllQueues {
                    state.withLock { _ = $0.knownQueues.insert(note.payload) }
                    wake.signal()
                } else if laneQueues.contains(note.payload) {
                    wake.signal()
                }
            }
        }
    }

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
                "worker": "\(queue.workerID)", "queues": "\(settings.queues)", "slots": "\(slots.count)",
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
        let buffered = state.withLock { state -> [JobLease] in
            var leases: [JobLease] = []
            for index in state.lanes.indices {
                for job in state.lanes[index].buffer {
                    leases.append(job.lease)
                    state.held[job.id] = nil
                }
                state.lanes[index].buffer.removeAll()
            }
            return leases
        }
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
        let unfinished = state.withLock { state in
            state.held.values.filter { !$0.timedOut && !$0.leaseLost }.map(\.job.lease)
        }
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

    /// Claims for every lane whose slots or buffer want jobs, with the completions waiting to be recorded
    /// riding along in the same statement; waits for a notification, a free slot or the poll interval when
    /// there is nothing to do.
    private func fetchLoop() {
        var connection: PostgresConnection?
        var retryDelay = 0.05
        var lastDiscovery = ContinuousClock.now - .seconds(3600)
        var lastSample = ContinuousClock.now
        var rotation = 0
        var schemaGate = SchemaGate()
        var needsKindTimeouts = true
        while true {
            let now = ContinuousClock.now
            let elapsed = Double((now - lastSample).nanoseconds) / 1e9
            let plan = state.withLock { state -> [(lane: Int, queue: String?, want: Int)]? in
                state.lastFetcherTick = now
                guard !state.isStopping else { return nil }
                if elapsed >= 0.05 {
                    for index in state.lanes.indices {
                        let rate = Double(state.lanes[index].startedSinceSample) / elapsed
                        state.lanes[index].startedSinceSample = 0
                        let cap = min(1000, state.lanes[index].slots.count * 100)
                        state.lanes[index].prefetchTarget = min(cap, Int(rate * 0.05))
                    }
                }
                return state.lanes.indices.compactMap { index in
                    let lane = state.lanes[index]
                    let free = lane.freeSlots.count
                    let room = max(0, lane.prefetchTarget - lane.buffer.count)
                    // Refill a buffer only once it has run half down, so claims stay large.
                    let wantsRefill = lane.buffer.count * 2 <= lane.prefetchTarget && room > 0
                    let want = min(
                        1000, free > lane.buffer.count || wantsRefill ? free - min(free, lane.buffer.count) + room : 0)
                    return want > 0 ? (lane: index, queue: lane.queue, want: want) : nil
                }
            }
            if elapsed >= 0.05 { lastSample = now }
            guard let plan else { break }
            guard !plan.isEmpty else {
                let wait = idleWait()
                if logger.logLevel <= .trace {
                    logger.trace("Fetcher waiting: no slot or buffer wants jobs", metadata: ["wait_s": "\(wait)"])
                }
                wake.wait(timeout: wait)
                continue
            }
            var completions: [OutcomeFlusher.Completion] = []
            do {
                var reconnected = false
                let open: PostgresConnection
                if let connection, connection.isConnected {
                    open = connection
                } else {
                    open =
                        try connection
                        ?? PostgresConnection(connectionString: settings.connectionString, logger: logger)
                    connection = open
                    reconnected = true
                    needsKindTimeouts = true
                }
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
                // A lane of every queue looks for queues with waiting jobs when it knows of none (a retry may
                // have come due in a queue it dropped after finding it empty), and at least once a second.
                let knowsNoQueue = state.withLock { $0.knownQueues.isEmpty }
                if plan.contains(where: { $0.queue == nil }),
                    knowsNoQueue
                        || ContinuousClock.now - lastDiscovery > .milliseconds(Int(min(settings.pollSeconds, 1) * 1000))
                {
                    let active = try queue.activeQueues(on: open)
                    state.withLock { $0.knownQueues.formUnion(active) }
                    lastDiscovery = .now
                }
                var claimedAny = false
                for lane in plan {
                    var want = lane.want
                    var names: [String]
                    if let name = lane.queue {
                        names = [name]
                    } else {
                        names = state.withLock { $0.knownQueues.sorted() }.filter {
                            !settings.excludedQueues.contains($0)
                        }
                        // Start from a different queue each round so no queue starves the others.
                        if !names.isEmpty {
                            rotation = (rotation + 1) % names.count
                            names = Array(names[rotation...] + names[..<rotation])
                        }
                    }
                    for name in names where want > 0 {
                        completions = flusher.takeCompletions()
                        let step = try queue.claim(
                            from: name, limit: want, completing: completions.map(\.lease), on: open)
                        flusher.recordCompleted(completions, completed: step.completed)
                        completions = []
                        if step.claimed.isEmpty && lane.queue == nil {
                            state.withLock { _ = $0.knownQueues.remove(name) }
                        }
                        if logger.logLevel <= .trace {
                            logger.trace(
                                "Claimed",
                                metadata: ["queue": "\(name)", "want": "\(want)", "got": "\(step.claimed.count)"])
                        }
                        accept(step.claimed, lane: lane.lane)
                        want -= step.claimed.count
                        claimedAny = claimedAny || !step.claimed.isEmpty
                    }
                }
                retryDelay = 0.05
                if !claimedAny {
                    let wait = idleWait()
                    if logger.logLevel <= .trace {
                        logger.trace("Fetcher waiting: nothing to claim", metadata: ["wait_s": "\(wait)"])
                    }
                    wake.wait(timeout: wait)
                }
            } catch {
                // Completions taken for this statement were not recorded; give them back.
                flusher.giveBack(completions)
                logger.warning(
                    "Could not claim jobs; retrying",
                    metadata: ["error": "\(error)", "retry_in_s": "\(String(format: "%.2f", retryDelay))"])
                wake.wait(timeout: retryDelay * Double.random(in: 0.5...1))
                retryDelay = min(retryDelay * 2, 5)
            }
        }
        connection?.close()
    }

    /// How long an idle fetcher waits: the poll interval, or less when a retry it knows of is due sooner.
    private func idleWait() -> Double {
        state.withLock { state in
            let now = ContinuousClock.now
            let passed = state.dueTimes.prefix { $0 <= now }.count
            if passed > 0 {
                state.dueTimes.removeFirst(passed)
                return 0.001
            }
            guard let next = state.dueTimes.first else { return settings.pollSeconds }
            return min(settings.pollSeconds, Double((next - now).nanoseconds) / 1e9)
        }
    }

    /// Buffers newly claimed jobs and starts as many as there are free slots.
    private func accept(_ jobs: [ClaimedJob], lane: Int) {
        guard !jobs.isEmpty else { return }
        let starts = state.withLock { state -> [(slot: Int, job: ClaimedJob)] in
            for job in jobs {
                state.held[job.id] = HeldJob(job: job, lane: lane)
                state.lanes[lane].buffer.append(job)
            }
            var starts: [(slot: Int, job: ClaimedJob)] = []
            while !state.lanes[lane].freeSlots.isEmpty, let job = state.lanes[lane].buffer.popFirst() {
                guard markStarted(job, position: 0, in: &state) else { continue }
                starts.append((state.lanes[lane].freeSlots.removeLast(), job))
            }
            return starts
        }
        for start in starts {
            run(start.job, lane: lane, slot: slots[start.slot])
        }
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
                let (next, refill, accepted) = state.withLock {
                    state -> (next: [ClaimedJob], refill: Bool, accepted: [AttemptResult]) in
                    var accepted: [AttemptResult] = []
                    accepted.reserveCapacity(results.count)
                    for (job, result) in zip(chunk, results) {
                        // Only this attempt's entry: a newer attempt of the same job may be held by now
                        // (this one timed out or lost its lease, and the job was claimed again).
                        guard let held = state.held[job.id], held.job.lease == job.lease else { continue }
                        state.held[job.id] = nil
                        // The timeout check already failed this attempt: the late result is dropped.
                        guard !held.timedOut else { continue }
                        accepted.append(result)
                    }
                    var next: [ClaimedJob] = []
                    if !state.isStopping {
                        let size = max(
                            1, min(32, state.lanes[lane].buffer.count / max(1, state.lanes[lane].slots.count)))
                        while next.count < size, let job = state.lanes[lane].buffer.popFirst() {
                            if markStarted(job, position: next.count, in: &state) { next.append(job) }
                        }
                    }
                    if next.isEmpty { state.lanes[lane].freeSlots.append(slot.index) }
                    let laneState = state.lanes[lane]
                    return (next, next.isEmpty || laneState.buffer.count * 2 <= laneState.prefetchTarget, accepted)
                }
                flusher.submit(accepted)
                if refill { wake.signal() }
                guard !next.isEmpty else { break }
                chunk = next
            }
            let (busy, free) = state.withLock { ($0.slotCount - $0.freeSlotCount, $0.freeSlotCount) }
            metrics.pool(busy: busy, free: free)
        }
    }

    /// Takes a job from the buffer for a slot: false (and the job dropped) when the attempt is no longer
    /// this worker's (its lease was lost while it waited). The timeout clock starts now, scaled by the
    /// job's position in its slot's chunk, so jobs waiting behind others in a chunk are not timed out
    /// before they start; a chunk only forms for jobs that take milliseconds.
    private func markStarted(_ job: ClaimedJob, position: Int, in state: inout PoolState) -> Bool {
        guard let held = state.held[job.id], held.job.lease == job.lease else { return false }
        guard !held.timedOut, !held.leaseLost else {
            state.held[job.id] = nil
            return false
        }
        let timeout = state.kindTimeouts[job.kind] ?? registry.handler(for: job.kind)?.timeoutSeconds ?? 300
        let now = ContinuousClock.now
        let seconds = min(max(timeout, 0.001), 10_000_000) * Double(position + 1)
        state.held[job.id]?.startedAt = now
        state.held[job.id]?.deadline = now + .milliseconds(Int(seconds * 1000))
        state.lanes[held.lane].startedSinceSample += 1
        return true
    }
}
