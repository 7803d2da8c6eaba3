extension JobQueue {
    // One rescuer at a time per database (the advisory lock is held for this statement only); a worker
    // that loses the lock race just rescues nothing this round.
    static let rescueStatement = PreparedStatement(
        name: "sluice_rescue",
        sql: """
            WITH turn AS (
                SELECT pg_try_advisory_xact_lock(hashtextextended('sluice.rescuer', 0)) AS mine
            ), expired AS (
                SELECT j.id, j.locked_by, j.attempt >= j.max_attempts AS dies
                FROM sluice.jobs j, turn
                WHERE turn.mine AND j.state = 'running' AND j.locked_until < now()
                ORDER BY j.locked_until
                LIMIT $1
                FOR UPDATE OF j SKIP LOCKED
            ), dead AS (
                DELETE FROM sluice.jobs j USING expired e
                WHERE j.id = e.id AND e.dies
                RETURNING j.id, j.queue, j.kind, j.payload, j.priority, j.attempt, j.max_attempts,
                          j.errors || jsonb_build_object('attempt', j.attempt, 'at', now(), 'kind', 'lease_expired',
                              'error', 'lease expired: worker ' || e.locked_by || ' stopped renewing it') AS errors,
                          'lease_expired' AS reason, j.unique_key, j.created_at, j.enqueued_by
            ), \(buryCTEs), rescued AS (
                UPDATE sluice.jobs j
                SET state = 'available', locked_by = NULL, locked_until = NULL, run_at = now(),
                    errors = j.errors || jsonb_build_object('attempt', j.attempt, 'at', now(), 'kind', 'lease_expired',
                        'error', 'lease expired: worker ' || e.locked_by || ' stopped renewing it')
                FROM expired e
                WHERE j.id = e.id AND NOT e.dies
                RETURNING j.id, j.queue
            )
            SELECT id, 'dead', queue FROM dead
            UNION ALL
            SELECT id, 'rescued', queue FROM rescued
            """
    )

    /// Returns up to `limit` jobs whose lease expired (their worker died or hung) to the queue, and moves
    /// those that were on their last attempt to the dead letters.
    ///
    /// Safe to call from every worker: one at a time wins an advisory lock, the others do nothing.
    /// Rescued jobs are announced on `sluice_jobs`, so idle workers take them without waiting for a poll.
    @discardableResult
    public func rescueExpired(limit: Int = 1000, on connection: PostgresConnection) throws(PostgresError)
        -> RescueReport
    {
        let rows = try connection.execute(Self.rescueStatement, [limit], context: "rescuing expired leases")
        var report = RescueReport()
        var queues = Set<String>()
        for row in rows {
            let id = try row.decode(Int64.self, at: 0)
            if try row.decode(String.self, at: 1) == "dead" {
                report.dead.append(id)
            } else {
                report.rescued.append(id)
                queues.insert(try row.decode(String.self, at: 2))
            }
        }
        if !queues.isEmpty {
            try connection.query(
                "SELECT pg_notify($1, queue) FROM unnest($2::text[]) AS queue",
                [Self.notificationChannel, Array(queues)], context: "announcing rescued jobs")
        }
        return report
    }
}
