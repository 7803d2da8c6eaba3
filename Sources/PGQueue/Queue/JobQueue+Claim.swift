import Foundation

extension JobQueue {
    // The inner SELECT walks jobs_claim_order exactly: its WHERE is the index predicate plus the leading
    // column, its ORDER BY the remaining columns. SKIP LOCKED lets claimers pass each other's rows.
    static let claimStatement = PreparedStatement(
        name: "sluice_claim",
        sql: """
            WITH picked AS (
                SELECT id FROM sluice.jobs
                WHERE state = 'available' AND queue = $1 AND run_at <= now()
                  AND NOT EXISTS (SELECT 1 FROM sluice.paused_queues p WHERE p.queue = $1)
                ORDER BY priority, run_at, id
                LIMIT $2
                FOR UPDATE SKIP LOCKED
            )
            UPDATE sluice.jobs j
            SET state = 'running',
                attempt = j.attempt + 1,
                locked_by = $3,
                locked_until = now() + make_interval(secs => $4)
            FROM picked
            WHERE j.id = picked.id
            RETURNING j.id, j.queue, j.kind, j.payload::text, j.priority, j.attempt, j.max_attempts,
                      j.unique_key, j.run_at, j.created_at
            """
    )

    /// Claims up to `limit` due jobs of one queue for this worker, in priority, run_at, id order.
    ///
    /// The claim counts the attempt and sets the lease, so a job that crashes its worker every time still
    /// reaches its `max_attempts`. A paused queue yields nothing.
    public func claim(from queue: String, limit: Int, on connection: PostgresConnection) throws(PostgresError)
        -> [ClaimedJob]
    {
        let rows = try connection.execute(
            Self.claimStatement,
            [queue, limit, workerID, leaseSeconds],
            context: "claiming jobs from queue \(queue)"
        )
        var jobs: [ClaimedJob] = []
        jobs.reserveCapacity(rows.count)
        for row in rows {
            jobs.append(
                ClaimedJob(
                    id: try row.decode(Int64.self, at: 0),
                    queue: try row.decode(String.self, at: 1),
                    kind: try row.decode(String.self, at: 2),
                    payload: try row.decode(String.self, at: 3),
                    priority: try row.decode(Int.self, at: 4),
                    attempt: try row.decode(Int.self, at: 5),
                    maxAttempts: try row.decode(Int.self, at: 6),
                    uniqueKey: try row.decode(String?.self, at: 7),
                    runAt: try row.decode(Date.self, at: 8),
                    createdAt: try row.decode(Date.self, at: 9)
                )
            )
        }
        // UPDATE … RETURNING does not keep the inner ORDER BY; hand jobs out in claim order.
        jobs.sort { ($0.priority, $0.runAt, $0.id) < ($1.priority, $1.runAt, $1.id) }
        return jobs
    }
}
