import PGQueue

/// What the pool knows and decides: which lanes claim and how many, which held job goes to which slot,
/// when an idle fetcher wakes, which attempts ran out of time or lost their lease.
///
/// Every decision is a method here that takes the time as an argument and does no I/O, so it can be tested
/// in-process; the fetcher, the slots and maintenance call them under ``PoolStateStore``'s lock and do the
/// talking to PostgreSQL themselves.
struct PoolState: Sendable {
    var lanes: [Lane]
    var held: [Int64: HeldJob] = [:]
    /// Queues with waiting jobs, for a lane that works every queue.
    var knownQueues: Set<String> = []
    /// Per-kind timeouts from `sluice.kinds`, over the handlers' own.
    var kindTimeouts: [String: Double] = [:]
    /// Each handler's own timeout, for kinds `sluice.kinds` does not name.
    let handlerTimeouts: [String: Double]
    /// Queues never claimed from, whatever a lane of every queue finds (`webhooks` without webhook secrets).
    let excludedQueues: Set<String>
    /// Queues with a lane of their own, which a lane of every queue leaves to it.
    let laneQueues: Set<String>
    var isStopping = false
    var lastFetcherTick: ContinuousClock.Instant
    /// When retries and snoozes recorded by this worker become due, soonest first, so an idle fetcher
    /// wakes for each instead of waiting out a long poll interval. Capped: the poll covers the rest.
    var dueTimes: [ContinuousClock.Instant] = []
    /// When a lane of every queue last asked PostgreSQL which queues have jobs.
    var lastDiscovery: ContinuousClock.Instant?
    /// Where a lane of every queue starts its next round, so no queue starves the others.
    var rotation = 0
    /// Lanes of one queue that found it empty at their last claim, and when. Such a lane is asked again on
    /// a notification for its queue, a retry coming due or after `quietRecheck`, not on every round the
    /// fetcher makes for a busier lane (an idle `outbound` lane beside a draining queue cost a claim a round).
    var quietSince: [Int: ContinuousClock.Instant] = [:]
    /// Notifications per queue, and how many each queue had when the fetcher's round went out: a claim that
    /// found nothing because it looked just before a notified commit neither makes its lane quiet nor makes
    /// a lane of every queue forget the queue.
    var notifications: [String: Int] = [:]
    var notificationsAtClaim: [String: Int] = [:]
    /// How long a quiet lane waits without a notification before it claims again. Short: jobs added with
    /// `notify => false`, scheduled ones coming due and other workers' retries send no notification.
    var quietRecheck = Duration.milliseconds(50)

    /// A timeout no handler or `sluice.kinds` names (DESIGN.md: 5 minutes).
    static let defaultTimeout = 300.0
    /// How often the start rate is measured to size the prefetch.
    static let sampleInterval = Duration.milliseconds(50)
    /// The shortest window a burst of starts is measured over.
    static let minimumBurstSample = Duration.milliseconds(2)
    /// The most jobs a lane holds ahead per slot, and in all: 50 ms of no-op jobs at the rate one worker
    /// reaches. A smaller cap emptied the buffer while the next claim was on its way.
    static let prefetchPerSlot = 400
    static let largestPrefetch = 4000

    init(
        lanes: [Lane], handlerTimeouts: [String: Double] = [:], excludedQueues: Set<String> = [],
        now: ContinuousClock.Instant
    ) {
        // Each lane's first sample starts with the pool.
        self.lanes = lanes.map { lane in
            var lane = lane
            lane.sampledAt = now
            return lane
        }
        self.handlerTimeouts = handlerTimeouts
        self.excludedQueues = excludedQueues
        self.laneQueues = Set(lanes.compactMap(\.queue))
        self.lastFetcherTick = now
    }

    /// How many jobs a lane wants claimed now, and from which queue (nil: every queue).
    struct Claim: Sendable, Equatable {
        var lane: Int
        var queue: String?
        var want: Int
    }

    // MARK: Claiming

    /// The fetcher's turn: records that it is alive, re-sizes each lane's prefetch from the start rate
    /// measured since the last sample, and says which lanes want jobs. Nil once the pool is stopping.
    mutating func claims(now: ContinuousClock.Instant) -> [Claim]? {
        lastFetcherTick = now
        guard !isStopping else { return nil }
        for index in lanes.indices {
            // Each lane is measured on its own clock. A lane that started twice its slots' worth of jobs is
            // measured at once: after an idle spell its last sample says "no jobs", and waiting 50 ms to
            // learn otherwise claimed a burst of a thousand fast jobs ten at a time. A lane of slow jobs
            // never starts that many that quickly, so it is neither prefetched nor measured over a short
            // window because another lane was.
            let lane = lanes[index]
            let elapsed = now - (lane.sampledAt ?? now)
            let burst =
                elapsed >= Self.minimumBurstSample && lane.startedSinceSample > 0
                && lane.startedSinceSample >= 2 * lane.slots.count
            guard elapsed >= Self.sampleInterval || burst else { continue }
            let rate = Double(lane.startedSinceSample) / (Double(elapsed.nanoseconds) / 1e9)
            lanes[index].startedSinceSample = 0
            lanes[index].prefetchTarget = min(
                min(Self.largestPrefetch, lane.slots.count * Self.prefetchPerSlot), Int(rate * 0.05))
            lanes[index].sampledAt = now
        }
        // A retry or snooze this worker recorded came due: it may be in any queue, so every lane looks.
        let passed = dueTimes.prefix { $0 <= now }.count
        if passed > 0 {
            dueTimes.removeFirst(passed)
            quietSince.removeAll()
            lastDiscovery = nil
        } else if !quietSince.isEmpty {
            quietSince = quietSince.filter { now - $0.value < quietRecheck }
        }
        notificationsAtClaim = notifications
        return lanes.indices.compactMap { index in
            guard quietSince[index] == nil else { return nil }
            let lane = lanes[index]
            let free = lane.freeSlots.count
            let room = max(0, lane.prefetchTarget - lane.buffer.count)
            // Refill a buffer only once it has run half down, so claims stay large.
            let wantsRefill = lane.buffer.count * 2 <= lane.prefetchTarget && room > 0
            let want = min(
                Self.largestPrefetch,
                free > lane.buffer.count || wantsRefill ? free - min(free, lane.buffer.count) + room : 0)
            return want > 0 ? Claim(lane: index, queue: lane.queue, want: want) : nil
        }
    }

    /// Whether to ask PostgreSQL which queues have waiting jobs before claiming, for a lane of every queue:
    /// first, after a retry this worker recorded came due (it may be in a queue the lane dropped after
    /// finding it empty), every 10 ms while the lane knows of none, and at least every poll interval (at
    /// most a second).
    func needsDiscovery(for claims: [Claim], now: ContinuousClock.Instant, pollSeconds: Double) -> Bool {
        guard claims.contains(where: { $0.queue == nil }) else { return false }
        guard let lastDiscovery else { return true }
        // Knowing of no queue, look again soon, but not on every round another lane makes.
        if knownQueues.isEmpty { return now - lastDiscovery > .milliseconds(10) }
        return now - lastDiscovery > .milliseconds(Int(min(pollSeconds, 1) * 1000))
    }

    /// A notification that `queue` has new jobs: a lane of every queue learns of it, a quiet lane of it
    /// claims again. Returns whether the fetcher should wake for it.
    mutating func notified(queue: String) -> Bool {
        var wakes = false
        for index in lanes.indices {
            if lanes[index].queue == nil {
                if isOwnedByLaneOfEveryQueue(queue) { knownQueues.insert(queue) }
                wakes = true
            } else if lanes[index].queue == queue {
                quietSince[index] = nil
                wakes = true
            }
        }
        if wakes { notifications[queue, default: 0] += 1 }
        return wakes
    }

    mutating func discovered(_ queues: [String], now: ContinuousClock.Instant) {
        knownQueues.formUnion(queues.filter(isOwnedByLaneOfEveryQueue))
        lastDiscovery = now
    }

    /// A queue that a lane of every queue claims from: not excluded, and without a lane of its own.
    func isOwnedByLaneOfEveryQueue(_ queue: String) -> Bool {
        !excludedQueues.contains(queue) && !laneQueues.contains(queue)
    }

    /// The queues to claim from for `claim`, in order: its own, or every known queue, starting one further
    /// along each round.
    mutating func queues(for claim: Claim) -> [String] {
        if let queue = claim.queue { return [queue] }
        let names = knownQueues.sorted()
        guard !names.isEmpty else { return [] }
        rotation = (rotation + 1) % names.count
        return Array(names[rotation...] + names[..<rotation])
    }

    /// Holds newly claimed jobs in their lane's buffer and gives as many as there are free slots a slot.
    /// A lane of every queue forgets a queue that gave nothing.
    mutating func accept(_ jobs: [ClaimedJob], from queue: String, lane: Int, now: ContinuousClock.Instant)
        -> [(slot: Int, job: ClaimedJob)]
    {
        // Empty, unless a notification for the queue came while the claim was out.
        let empty = jobs.isEmpty && notifications[queue, default: 0] == notificationsAtClaim[queue, default: 0]
        if lanes[lane].queue == nil {
            if empty { knownQueues.remove(queue) }
        } else {
            quietSince[lane] = empty ? now : nil
        }
        for job in jobs {
            held[job.id] = HeldJob(job: job, lane: lane, claimedAt: now)
            lanes[lane].buffer.append(job)
        }
        var starts: [(slot: Int, job: ClaimedJob)] = []
        while !lanes[lane].freeSlots.isEmpty, let job = lanes[lane].buffer.popFirst() {
            guard start(job, position: 0, now: now) else { continue }
            starts.append((lanes[lane].freeSlots.removeLast(), job))
        }
        return starts
    }

    // MARK: Running

    /// A slot finished `chunk` with `results` (in the same order): keeps the results still wanted and
    /// hands the slot its next chunk from the buffer, or frees it.
    ///
    /// A result is dropped when its attempt is no longer held (a newer attempt of the job may be: this one
    /// timed out or lost its lease and the job was claimed again) or the timeout check already failed it.
    /// Fast jobs go in chunks (up to 32, never more than the buffer holds per slot), so the lock and the
    /// flusher see one visit per chunk rather than one per job.
    mutating func finish<Result>(
        _ chunk: [ClaimedJob], results: [Result], lane: Int, slot: Int, now: ContinuousClock.Instant
    ) -> (accepted: [Result], next: [ClaimedJob], wantsRefill: Bool) {
        var accepted: [Result] = []
        accepted.reserveCapacity(results.count)
        for (job, result) in zip(chunk, results) {
            guard let index = held.index(forKey: job.id), held.values[index].job.lease == job.lease else { continue }
            let timedOut = held.values[index].timedOut
            held.remove(at: index)
            guard !timedOut else { continue }
            accepted.append(result)
        }
        var next: [ClaimedJob] = []
        if !isStopping {
            let size = max(1, min(32, lanes[lane].buffer.count / max(1, lanes[lane].slots.count)))
            while next.count < size, let job = lanes[lane].buffer.popFirst() {
                if start(job, position: next.count, now: now) { next.append(job) }
            }
        }
        if next.isEmpty { lanes[lane].freeSlots.append(slot) }
        let laneState = lanes[lane]
        return (accepted, next, next.isEmpty || laneState.buffer.count * 2 <= laneState.prefetchTarget)
    }

    /// Takes a job from the buffer for a slot: false (and the job dropped) when the attempt is no longer
    /// this worker's (its lease was lost while it waited). The timeout clock starts now, scaled by the
    /// job's position in its slot's chunk, so jobs waiting behind others in a chunk are not timed out
    /// before they start; a chunk only forms for jobs that take milliseconds.
    mutating func start(_ job: ClaimedJob, position: Int, now: ContinuousClock.Instant) -> Bool {
        // One lookup, and the entry changed in place: this runs for every job, under the pool's lock.
        guard let index = held.index(forKey: job.id), held.values[index].job.lease == job.lease else { return false }
        guard !held.values[index].timedOut, !held.values[index].leaseLost else {
            held.remove(at: index)
            return false
        }
        let seconds = min(max(timeout(of: job.kind), 0.001), 10_000_000) * Double(position + 1)
        held.values[index].startedAt = now
        held.values[index].deadline = now + .milliseconds(Int(seconds * 1000))
        lanes[held.values[index].lane].startedSinceSample += 1
        return true
    }

    /// A kind's timeout: `sluice.kinds`, else its handler's, else the default.
    func timeout(of kind: String) -> Double {
        kindTimeouts[kind] ?? handlerTimeouts[kind] ?? Self.defaultTimeout
    }

    // MARK: Waiting

    /// Notes that jobs will be due again after these delays (seconds).
    mutating func scheduleWakes(in delays: [Double], now: ContinuousClock.Instant) {
        dueTimes += delays.map { now + .milliseconds(Int($0 * 1000) + 5) }
        dueTimes.sort()
        if dueTimes.count > 1000 { dueTimes.removeLast(dueTimes.count - 1000) }
    }

    /// How long an idle fetcher waits, in seconds: the poll interval, or less when a retry it knows of is
    /// due sooner (at once when one has come due).
    func idleWait(now: ContinuousClock.Instant, pollSeconds: Double) -> Double {
        // One that came due since the fetcher's last round: the next round (``claims(now:)``) takes it.
        guard let next = dueTimes.first else { return pollSeconds }
        if next <= now { return 0.001 }
        return min(pollSeconds, Double((next - now).nanoseconds) / 1e9)
    }

    // MARK: Maintenance

    /// Marks the attempts whose deadline has passed as timed out and returns them, to be failed.
    mutating func expireTimeouts(now: ContinuousClock.Instant) -> [HeldJob] {
        var expired: [HeldJob] = []
        for (id, entry) in held where !entry.timedOut {
            guard let deadline = entry.deadline, now >= deadline else { continue }
            held[id]?.timedOut = true
            expired.append(entry)
        }
        return expired
    }

    /// The leases to extend: every held attempt not timed out or lost; and the jobs to give back, those
    /// still waiting for a slot since before `staleBefore` (every slot of their lane busy or stuck). Those
    /// are released with their attempt returned, so another worker takes them at once and a job that
    /// never ran here loses nothing; a slot that reaches one later skips it.
    mutating func leasesToExtend(staleBefore: ContinuousClock.Instant) -> (extend: [JobLease], giveBack: [JobLease]) {
        var giveBack: [JobLease] = []
        for (id, entry) in held where entry.startedAt == nil && !entry.leaseLost && entry.claimedAt < staleBefore {
            held[id]?.leaseLost = true
            giveBack.append(entry.job.lease)
        }
        return (held.values.filter { !$0.timedOut && !$0.leaseLost }.map(\.job.lease), giveBack)
    }

    /// After a heartbeat: the leases it did not extend that are still held are lost (rescued by another
    /// worker). A job that finished meanwhile has left `held`: it was completed, not lost.
    mutating func markLost(_ leases: [JobLease], extended: Set<Int64>) -> [JobLease] {
        leases.filter { lease in
            guard !extended.contains(lease.id), let entry = held[lease.id], entry.job.lease == lease else {
                return false
            }
            held[lease.id]?.leaseLost = true
            return true
        }
    }

    // MARK: Stopping

    /// Empties every lane's buffer and returns the leases of the jobs in them, to give back at once.
    mutating func releaseBuffered() -> [JobLease] {
        var leases: [JobLease] = []
        for index in lanes.indices {
            for job in lanes[index].buffer {
                leases.append(job.lease)
                held[job.id] = nil
            }
            lanes[index].buffer.removeAll()
        }
        return leases
    }

    /// The leases of attempts still running that are this worker's to give back.
    var unfinishedLeases: [JobLease] {
        held.values.filter { !$0.timedOut && !$0.leaseLost }.map(\.job.lease)
    }

    var freeSlotCount: Int { lanes.reduce(0) { $0 + $1.freeSlots.count } }
    var slotCount: Int { lanes.reduce(0) { $0 + $1.slots.count } }
    var runningCount: Int { held.values.reduce(0) { $0 + ($1.startedAt != nil ? 1 : 0) } }
}
