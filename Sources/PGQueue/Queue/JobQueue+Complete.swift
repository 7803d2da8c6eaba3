extension JobQueue {
    /// The CTEs `done` and `remembered` that complete leases: completed jobs leave the hot table, and a
    /// unique key starts its retention period instead of being deleted, so a redelivery soon after
    /// completion is still absorbed. The placeholders name the parameters that carry ids, attempts, the
    /// claims' holder tokens and the retention in seconds.
    static func completionCTEs(ids: String, attempts: String, holders: String, retention: String) -> String {
        """
        done AS (
            DELETE FROM sluice.jobs j
            USING unnest(\(ids)::bigint[], \(attempts)::integer[], \(holders)::text[]) AS c(id, attempt, holder)
            WHERE j.id = c.id AND j.attempt = c.attempt AND j.locked_by = c.holder AND j.state = 'running'
            RETURNING j.id, j.unique_key
        ), remembered AS (
            UPDATE sluice.unique_keys u
            SET expires_at = now() + make_interval(secs => \(retention)::double precision)
            FROM done
            WHERE u.key = done.unique_key AND u.job_id = done.id
        )
        """
    }

    static let completeStatement = PreparedStatement(
        name: "sluice_complete",
        sql: "WITH \(completionCTEs(ids: "$1", attempts: "$2", holders: "$3", retention: "$4")) SELECT id FROM done"
    )

    /// Completes jobs this worker holds, in one statement, and returns the ids that were completed.
    ///
    /// A lease that is no longer this worker's (rescued, then claimed by another) is skipped: its id is
    /// missing from the result. Run it in the handler's transaction for exactly-once effects.
    @discardableResult
    public func complete(_ leases: [JobLease], on connection: PostgresConnection) throws(PostgresError) -> [Int64] {
        guard !leases.isEmpty else { return [] }
        let leases = Self.lockOrder(leases)
        let rows = try connection.execute(
            Self.completeStatement,
            [leases.map(\.id), leases.map(\.attempt), leases.map(\.holder), uniqueRetentionSeconds],
            context: "completing \(leases.count) jobs"
        )
        return try rows.map { row throws(PostgresError) in try row.decode(Int64.self, at: 0) }
    }
}
