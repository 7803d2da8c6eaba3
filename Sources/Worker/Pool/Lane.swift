import DequeModule
import PGQueue

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
    /// When the fetcher last measured this lane's rate (the pool sets it when it starts).
    var sampledAt: ContinuousClock.Instant?

    init(queue: String?, slots: [Int]) {
        self.queue = queue
        self.slots = slots
        // Slots are taken from the end: the lowest index first.
        self.freeSlots = slots.reversed()
    }
}
