import PGQueue

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
