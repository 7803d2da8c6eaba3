import DequeModule
import Foundation
import PGQueue
import Synchronization

/// A job this worker holds a lease on: waiting in its lane's buffer, or running on a slot.
struct HeldJob: Sendable {
    var job: ClaimedJob
    var lane: Int
    /// When this worker claimed it.
    var claimedAt = ContinuousClock.now
    /// Set when a slot starts it.
    var startedAt: ContinuousClock.Instant?
    var deadline: ContinuousClock.Instant?
    /// The timeout check recorded a failure for this attempt; whatever the handler returns later is dropped.
    var timedOut = false
    /// A heartbeat found the lease gone (rescued); the result will be fenced off by PostgreSQL anyway.
    var leaseLost = false
}

/// One lane of slots: a named queue with its own concurrency, or every queue sharing all slots.
struct Lane: Sendable {
    /// nil: every queue with waiting jobs.
    var queue: String?
    var slots: [Int]
    var freeSlots: [Int]
    /// Claimed jobs waiting for a slot, in claim order.
    var buffer: Deque<ClaimedJob> = []
    /// How many jobs to keep claimed ahead of the slots: about 50 ms of work at the recent start rate, so
    /// fast jobs are claimed in large batches while slow jobs are never held back from other workers.
    var prefetchTarget = 0
    /// Jobs started since the fetcher last measured the rate.
    var startedSinceSample = 0
}

/// The pool's shared state.
struct PoolState: Sendable {
    var lanes: [Lane]
    var held: [Int64: HeldJob] = [:]
    /// Queues with waiting jobs, for a lane that works every queue.
    var knownQueues: Set<String> = []
    /// Per-kind timeouts from `sluice.kinds`.
    var kindTimeouts: [String: Double] = [:]
    var isStopping = false
    var lastFetcherTick = ContinuousClock.now
    /// When retries and snoozes recorded by this worker become due, soonest first, so an idle fetcher
    /// wakes for each instead of waiting out a long poll interval. Capped: the poll covers the rest.
    var dueTimes: [ContinuousClock.Instant] = []

    /// Notes that jobs will be due again after these delays (seconds).
    mutating func scheduleWakes(in delays: [Double]) {
        let now = ContinuousClock.now
        dueTimes += delays.map { now + .milliseconds(Int($0 * 1000) + 5) }
        dueTimes.sort()
        if dueTimes.count > 1000 { dueTimes.removeLast(dueTimes.count - 1000) }
    }

    var freeSlotCount: Int { lanes.reduce(0) { $0 + $1.freeSlots.count } }
    var slotCount: Int { lanes.reduce(0) { $0 + $1.slots.count } }
    var runningCount: Int { held.values.reduce(0) { $0 + ($1.startedAt != nil ? 1 : 0) } }
}

/// The pool's state behind one lock, shared by the fetcher, the slots, maintenance and the stop.
final class PoolStateStore: Sendable {
    private let mutex: Mutex<PoolState>

    init(_ state: PoolState) {
        mutex = Mutex(state)
    }

    func withLock<Result: Sendable>(_ body: (inout PoolState) -> Result) -> Result {
        mutex.withLock { state in body(&state) }
    }
}
