extension JobQueue {
    static let activeQueuesStatement = PreparedStatement(
        name: "sluice_active_queues",
        sql: """
            WITH RECURSIVE queues AS (
                (SELECT queue FROM sluice.jobs WHERE state = 'available' ORDER BY queue LIMIT 1)
                UNION ALL
                SELECT (SELECT j.queue FROM sluice.jobs j
                        WHERE j.state = 'available' AND j.queue > queues.queue
                        ORDER BY j.queue LIMIT 1)
                FROM queues WHERE queues.queue IS NOT NULL
            )
            SELECT queue FROM queues WHERE queue IS NOT NULL
            """
    )

    /// The queues that hold jobs waiting for a worker, found by skipping through the claim index one queue
    /// at a time (a few index probes per queue, however many jobs wait).
    public func activeQueues(on connection: PostgresConnection) throws(PostgresError) -> [String] {
        let rows = try connection.execute(
            Self.activeQueuesStatement,
            context: "finding queues with waiting jobs"
        )
        return try rows.map { row throws(PostgresError) in try row.decode(String.self, at: 0) }
    }

    /// Per-kind execution timeouts set by operators in `sluice.kinds.timeout_seconds`.
    public func kindTimeouts(on connection: PostgresConnection) throws(PostgresError) -> [String: Double] {
        let rows = try connection.query(
            "SELECT kind, timeout_seconds FROM sluice.kinds WHERE timeout_seconds IS NOT NULL",
            context: "reading per-kind timeouts")
        var timeouts: [String: Double] = [:]
        for row in rows {
            let seconds = try row.decode(Double.self, at: 1)
            // The table's check refuses these; a value from an older schema is ignored, not trusted.
            guard seconds.isFinite, seconds > 0 else { continue }
            timeouts[try row.decode(String.self, at: 0)] = seconds
        }
        return timeouts
    }
}
