import PGQueue

/// A job this worker holds a lease on: waiting in its lane's buffer, or running on a slot.
struct HeldJob: Sendable {
    var job: ClaimedJob
    var lane: Int
    /// When this worker claimed it.
    var claimedAt: ContinuousClock.Instant
    /// Set when a slot starts it.
    var startedAt: ContinuousClock.Instant?
    var deadline: ContinuousClock.Instant?
    /// The timeout check recorded a failure for this attempt; whatever the handler returns later is dropped.
    var timedOut = false
    /// A heartbeat found the lease gone (rescued); the result will be fenced off by PostgreSQL anyway.
    var leaseLost = false
}
