import PGQueue

/// What a worker pool is told; part of the process's ``SluiceConfiguration``.
struct PoolSettings: Sendable {
    /// The database (`DATABASE_URL`); nil uses libpq's `PG*` variables and defaults.
    var connectionString: String?
    /// Which queues to work and with how many slots each (`SLUICE_QUEUES`, default all).
    var queues: QueueSelection
    /// Jobs running at once in this process, over all queues (`SLUICE_CONCURRENCY`, default 10).
    var concurrency: Int
    /// How long a claim holds a job before the rescuer may take it back (`SLUICE_LEASE_SECONDS`, 30).
    var leaseSeconds: Double
    /// How often an idle worker looks for work when no notification came (`SLUICE_POLL_SECONDS`, 1).
    var pollSeconds: Double
    /// How long a completed job's unique key absorbs duplicates (`SLUICE_UNIQUE_RETENTION`, 7d).
    var uniqueRetentionSeconds: Double
    /// Failed attempts kept in a job's `errors` (`SLUICE_ERROR_HISTORY`, 20); older ones are trimmed.
    var errorHistoryLimit: Int
    /// Kinds enqueued once per slot of their interval (`SLUICE_PERIODIC`).
    var periodic: [PeriodicSchedule] = []
    /// Queues this pool never claims from, whatever `queues` says: `webhooks` without webhook secrets,
    /// since its events are verified again against them.
    var excludedQueues: Set<String> = []
    /// How often a claim starts from the head of a queue rather than past the last job claimed
    /// (`SLUICE_CLAIM_RESCAN_SECONDS`, 1; 0 claims from the head every time, as before ClaimCursor).
    var claimRescanSeconds: Double = 1
}
