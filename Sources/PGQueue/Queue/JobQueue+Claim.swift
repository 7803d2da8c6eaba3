import Foundation

extension JobQueue {
    // The inner SELECT walks jobs_claim_order exactly: its WHERE is the index predicate plus the leading
    // column, its ORDER BY the remaining columns. SKIP LOCKED lets claimers pass each other's rows.
    // The UPDATE finds the picked rows through `= ANY (ARRAY(…))`, which always plans as primary-key
    // lookups: a join with `picked` lets a generic plan, which guesses LIMIT $2 at a tenth of the
    // table, hash the whole table instead.
    private static func pickAndLease(after gate: String = "") -> String {
        """
        picked AS (
            SELECT id FROM sluice.jobs
            WHERE state = 'available' AND queue = $1 AND run_at <= now()\(gate)
              AND NOT EXISTS (SELECT 1 FROM sluice.paused_queues p WHERE p.queue = $1)
            ORDER BY priority, run_at, id
            LIMIT $2
            FOR UPDATE SKIP LOCKED
        ), claimed AS (
            UPDATE sluice.jobs j
            SET state = 'running',
                attempt = j.attempt + 1,
                locked_by = $3,
                locked_until = now() + make_interval(secs => $4)
            WHERE j.id = ANY (ARRAY(SELECT id FROM picked))
            RETURNING j.id, j.queue, j.kind, j.payload::text AS payload, j.priority, j.attempt, j.max_attempts,
                      j.unique_key, j.run_at, j.created_at
        )
        """
    }

    static let claimStatement = PreparedStatement(
        name: "sluice_claim",
        sql: "WITH \(pickAndLease()) SELECT 'claimed', * FROM claimed"
    )

    // Completing the last batch and claiming the next in one statement halves the transactions (and WAL
    // flushes) of a busy worker; its completion is completeStatement's.
    //
    // The gate makes the whole DELETE finish before the claim locks anything. Without it, two workers can
    // deadlock: a claim may lock (and then pass over) a row that another worker claimed a moment ago,
    // holding that lock to the end of its transaction, while its own DELETE waits on a row the other's
    // claim locked in turn. With every DELETE done first, a waiting DELETE only ever waits for a claim,
    // and a claim never waits (SKIP LOCKED), so no cycle can form.
    static let completeAndClaimStatement = PreparedStatement(
        name: "sluice_complete_and_claim",
        sql: """
            WITH \(completionCTEs(ids: "$5", attempts: "$6", holders: "$8", retention: "$7"))
            , \(pickAndLease(after: " AND (SELECT count(*) FROM done) >= 0"))
            SELECT 'claimed', * FROM claimed
            UNION ALL
            SELECT 'completed', id, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL FROM done
            """
    )

    /// Claims up to `limit` due jobs of one queue for this worker, in priority, run_at, id order.
    ///
    /// The claim counts the attempt and sets the lease, so a job that crashes its worker every time still
    /// reaches its `max_attempts`. A paused queue yields nothing.
    public func claim(from queue: String, limit: Int, on connection: PostgresConnection) throws(PostgresError)
        -> [ClaimedJob]
    {
        let holder = nextHolder()
        let rows = try connection.execute(
            Self.claimStatement,
            [queue, limit, holder, leaseSeconds],
            context: "claiming jobs from queue \(queue)"
        )
        return try Self.decodeClaim(rows, holder: holder).claimed
    }

    /// Completes jobs this worker holds and claims the next ones, in one statement and one transaction.
    ///
    /// - Returns: the jobs claimed, and the ids that were completed (a completion whose lease this worker
    ///   no longer holds is fenced off, as in ``complete(_:on:)``).
    public func claim(
        from queue: String,
        limit: Int,
        completing leases: [JobLease],
        on connection: PostgresConnection
    ) throws(PostgresError) -> (claimed: [ClaimedJob], completed: [Int64]) {
        guard !leases.isEmpty else {
            return (try claim(from: queue, limit: limit, on: connection), [])
        }
        let holder = nextHolder()
        let rows = try connection.execute(
            Self.completeAndClaimStatement,
            [
                queue, limit, holder, leaseSeconds, leases.map(\.id), leases.map(\.attempt),
                uniqueRetentionSeconds, leases.map(\.holder),
            ],
            context: "completing \(leases.count) jobs and claiming from queue \(queue)"
        )
        return try Self.decodeClaim(rows, holder: holder)
    }

    private static func decodeClaim(_ rows: PostgresRows, holder: String) throws(PostgresError) -> (
        claimed: [ClaimedJob], completed: [Int64]
    ) {
        var jobs: [ClaimedJob] = []
        var completed: [Int64] = []
        jobs.reserveCapacity(rows.count)
        for row in rows {
            let id = try row.decode(Int64.self, at: 1)
            guard row[0] == "claimed" else {
                completed.append(id)
                continue
            }
            jobs.append(
                ClaimedJob(
                    id: id,
                    queue: try row.decode(String.self, at: 2),
                    kind: try row.decode(String.self, at: 3),
                    payload: try row.decode(String.self, at: 4),
                    priority: try row.decode(Int.self, at: 5),
                    attempt: try row.decode(Int.self, at: 6),
                    maxAttempts: try row.decode(Int.self, at: 7),
                    uniqueKey: try row.decode(String?.self, at: 8),
                    runAt: try row.decode(Date.self, at: 9),
                    createdAt: try row.decode(Date.self, at: 10),
                    holder: holder
                )
            )
        }
        // UPDATE … RETURNING does not keep the inner ORDER BY; hand jobs out in claim order.
        jobs.sort { ($0.priority, $0.runAt, $0.id) < ($1.priority, $1.runAt, $1.id) }
        return (jobs, completed)
    }
}
