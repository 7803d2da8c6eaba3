public import Foundation

extension JobQueue {
    /// A delay PostgreSQL can add to now(): not negative, not NaN or infinite, at most ten years.
    static func clampedDelay(_ seconds: Double) -> Double {
        guard seconds.isFinite else { return seconds > 0 ? 315_360_000 : 0 }
        return min(max(0, seconds), 315_360_000)
    }

    /// Leases sorted by job id: every statement that locks running jobs by lease (completions, heartbeats,
    /// releases, failures) takes their row locks in that one order, so two of them, on two connections of
    /// one worker, never wait for each other in a cycle (SQLSTATE 40P01).
    static func lockOrder(_ leases: [JobLease]) -> [JobLease] {
        leases.sorted { $0.id < $1.id }
    }

    // The rows are locked first, in id order, whatever join the planner picks for the update.
    static let heartbeatStatement = PreparedStatement(
        name: "sluice_heartbeat",
        sql: """
            WITH held AS (
                SELECT j.id
                FROM sluice.jobs j
                JOIN unnest($1::bigint[], $2::integer[], $3::text[]) AS h(id, attempt, holder) ON j.id = h.id
                WHERE j.attempt = h.attempt AND j.locked_by = h.holder AND j.state = 'running'
                ORDER BY j.id
                FOR UPDATE OF j
            )
            UPDATE sluice.jobs j
            SET locked_until = now() + make_interval(secs => $4)
            FROM held
            WHERE j.id = held.id
            RETURNING j.id
            """
    )

    // Giving the attempt back keeps a snooze, or a release at shutdown, from counting as a failure.
    static let releaseStatement = PreparedStatement(
        name: "sluice_release",
        sql: """
            UPDATE sluice.jobs j
            SET state = 'available', attempt = j.attempt - 1, locked_by = NULL, locked_until = NULL,
                run_at = now() + make_interval(secs => r.delay)
            FROM unnest($1::bigint[], $2::integer[], $4::double precision[], $3::text[]) AS r(id, attempt, delay, holder)
            WHERE j.id = r.id AND j.attempt = r.attempt AND j.locked_by = r.holder AND j.state = 'running'
            RETURNING j.id
            """
    )

    /// Extends the leases of jobs this worker is running and returns the ids it still holds.
    ///
    /// An id missing from the result was rescued (the lease had already expired): its handler's work
    /// will be fenced off, and another worker may be running the job now.
    public func heartbeat(_ leases: [JobLease], on connection: PostgresConnection) throws(PostgresError) -> Set<Int64> {
        guard !leases.isEmpty else { return [] }
        let leases = Self.lockOrder(leases)
        let rows = try connection.execute(
            Self.heartbeatStatement,
            [leases.map(\.id), leases.map(\.attempt), leases.map(\.holder), leaseSeconds],
            context: "extending \(leases.count) leases"
        )
        var held = Set<Int64>()
        for row in rows { held.insert(try row.decode(Int64.self, at: 0)) }
        return held
    }

    /// Returns jobs to the queue at once with their attempt given back, as a graceful stop does for jobs
    /// still running, so another worker takes them without waiting for the lease to expire.
    @discardableResult
    public func release(_ leases: [JobLease], on connection: PostgresConnection) throws(PostgresError) -> [Int64] {
        try release(leases, delays: Array(repeating: 0, count: leases.count), on: connection)
    }

    /// Puts a job back to run again after `delay` seconds, with its attempt given back: for a handler that
    /// is waiting on something (a rate limit, an object not there yet) rather than failing.
    /// - Returns: false when this worker no longer holds the lease.
    @discardableResult
    public func snooze(_ lease: JobLease, for delay: TimeInterval, on connection: PostgresConnection)
        throws(PostgresError) -> Bool
    {
        try !release([lease], delays: [max(0, delay)], on: connection).isEmpty
    }

    /// Returns jobs to the queue to run after their delays (seconds), with their attempts given back:
    /// ``snooze(_:for:on:)`` for many jobs in one statement.
    /// - Returns: the ids this worker still held, and so released.
    @discardableResult
    public func release(_ leases: [JobLease], delays: [Double], on connection: PostgresConnection)
        throws(PostgresError) -> [Int64]
    {
        precondition(leases.count == delays.count, "release(_:delays:on:) takes one delay per lease")
        guard !leases.isEmpty else { return [] }
        let ordered = zip(leases, delays).sorted { $0.0.id < $1.0.id }
        let leases = ordered.map(\.0)
        let rows = try connection.execute(
            Self.releaseStatement,
            [leases.map(\.id), leases.map(\.attempt), leases.map(\.holder), ordered.map { Self.clampedDelay($0.1) }],
            context: "releasing \(leases.count) jobs"
        )
        return try rows.map { row throws(PostgresError) in try row.decode(Int64.self, at: 0) }
    }
}
