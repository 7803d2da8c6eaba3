import Foundation

extension JobQueue {
    // The inner SELECT walks jobs_claim_order exactly: its WHERE is the index predicate plus the leading
    // column, its ORDER BY the remaining columns. SKIP LOCKED lets claimers pass each other's rows.
    // The UPDATE finds the picked rows through `= ANY (ARRAY(…))`, which always plans as primary-key
    // lookups: a join with `picked` lets a generic plan, which guesses LIMIT $2 at a tenth of the
    // table, hash the whole table instead.
    private static func pickAndLease(after gate: String = "", bound: Int? = nil) -> String {
        // Past a bound, the scan starts at that key of jobs_claim_order (see ClaimCursor).
        let past =
            bound.map {
                " AND (priority, run_at, id) > ($\($0)::integer, timestamptz 'epoch' + $\($0 + 1)::bigint * interval '1 microsecond', $\($0 + 2)::bigint)"
            } ?? ""
        return """
            picked AS (
                SELECT id FROM sluice.jobs
                WHERE state = 'available' AND queue = $1 AND run_at <= now()\(gate)\(past)
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
                          j.unique_key, j.run_at, j.created_at,
                          (extract(epoch FROM j.run_at) * 1000000)::bigint AS run_at_us
            )
            """
    }

    static let claimStatement = PreparedStatement(
        name: "sluice_claim",
        sql: "WITH \(pickAndLease()) SELECT 'claimed', * FROM claimed"
    )

    static let claimPastStatement = PreparedStatement(
        name: "sluice_claim_past",
        sql: "WITH \(pickAndLease(bound: 5)) SELECT 'claimed', * FROM claimed"
    )

    // Completing the last batch and claiming the next in one statement halves the transactions (and WAL
    // flushes) of a busy worker; its completion is completeStatement's.
    //
    // The gate makes the whole DELETE finish before the claim locks anything. Without it, two workers can
    // deadlock: a claim may lock (and then pass over) a row that another worker claimed a moment ago,
    // holding that lock to the end of its transaction, while its own DELETE waits on a row the other's
    // claim locked in turn. With every DELETE done first, a waiting DELETE only ever waits for a claim,
    // and a claim never waits (SKIP LOCKED), so no cycle can form.
    static func completeAndClaim(name: String, bound: Int?) -> PreparedStatement {
        PreparedStatement(
            name: name,
            sql: """
                WITH \(completionCTEs(ids: "$5", attempts: "$6", holders: "$8", retention: "$7"))
                , \(pickAndLease(after: " AND (SELECT count(*) FROM done) >= 0", bound: bound))
                SELECT 'claimed', * FROM claimed
                UNION ALL
                SELECT 'completed', id, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL FROM done
                """
        )
    }

    static let completeAndClaimStatement = completeAndClaim(name: "sluice_complete_and_claim", bound: nil)
    static let completeAndClaimPastStatement = completeAndClaim(name: "sluice_complete_and_claim_past", bound: 9)

    /// Claims up to `limit` due jobs of one queue for this worker, in priority, run_at, id order.
    ///
    /// The claim counts the attempt and sets the lease, so a job that crashes its worker every time still
    /// reaches its `max_attempts`. A paused queue yields nothing.
    public func claim(from queue: String, limit: Int, on connection: PostgresConnection) throws(PostgresError)
        -> [ClaimedJob]
    {
        try claim(from: queue, limit: limit, completing: [], after: nil, on: connection).claimed
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
        let step = try claim(from: queue, limit: limit, completing: leases, after: nil, on: connection)
        return (step.claimed, step.completed)
    }

    /// What one claim did: the jobs claimed, in claim order, the ids completed with it, and the position of
    /// the last job claimed (for a ``ClaimCursor``).
    public struct ClaimStep: Sendable {
        public var claimed: [ClaimedJob]
        public var completed: [Int64]
        public var last: ClaimPosition?
    }

    /// Completes jobs this worker holds and claims the next ones past `start` (from the head when nil), in
    /// one statement and one transaction.
    public func claim(
        from queue: String,
        limit: Int,
        completing leases: [JobLease],
        after start: ClaimPosition?,
        on connection: PostgresConnection
    ) throws(PostgresError) -> ClaimStep {
        let holder = nextHolder()
        var bindings: [(any PostgresBindable)?] = [queue, limit, holder, leaseSeconds]
        let statement: PreparedStatement
        let leases = Self.lockOrder(leases)
        if leases.isEmpty {
            statement = start == nil ? Self.claimStatement : Self.claimPastStatement
        } else {
            statement = start == nil ? Self.completeAndClaimStatement : Self.completeAndClaimPastStatement
            bindings += [
                leases.map(\.id), leases.map(\.attempt), uniqueRetentionSeconds, leases.map(\.holder),
            ]
        }
        if let start { bindings += [start.priority, start.runAtMicroseconds, start.id] }
        let rows = try connection.execute(
            statement, bindings,
            context: leases.isEmpty
                ? "claiming jobs from queue \(queue)"
                : "completing \(leases.count) jobs and claiming from queue \(queue)")
        return try Self.decodeClaim(rows, holder: holder)
    }

    private static func decodeClaim(_ rows: PostgresRows, holder: String) throws(PostgresError) -> ClaimStep {
        var jobs: [ClaimedJob] = []
        var completed: [Int64] = []
        var last: ClaimPosition?
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
            let position = ClaimPosition(
                priority: try row.decode(Int.self, at: 5), runAtMicroseconds: try row.decode(Int64.self, at: 11),
                id: id)
            last = max(last ?? position, position)
        }
        // UPDATE … RETURNING does not keep the inner ORDER BY; hand jobs out in claim order.
        jobs.sort { ($0.priority, $0.runAt, $0.id) < ($1.priority, $1.runAt, $1.id) }
        return ClaimStep(claimed: jobs, completed: completed, last: last)
    }
}
