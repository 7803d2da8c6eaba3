/// One row of `sluice.queue_stats`.
public struct QueueStats: Sendable, Hashable {
    public var queue: String
    public var paused: Bool
    /// Due now and waiting for a worker.
    public var available: Int
    /// Waiting for a future `run_at` (scheduled, or backing off after a failure).
    public var scheduled: Int
    public var running: Int
    public var dead: Int
    /// How long the oldest available job has waited, in seconds; nil when none is available.
    public var oldestAvailableAge: Double?
}

extension JobQueue {
    /// `sluice.queue_stats`, one row per queue.
    public func stats(on connection: PostgresConnection) throws(PostgresError) -> [QueueStats] {
        let rows = try connection.query(
            """
            SELECT queue, paused, available, scheduled, running, dead,
                   extract(epoch FROM oldest_available_age)::double precision
            FROM sluice.queue_stats
            """,
            context: "reading queue statistics"
        )
        return try rows.map { row throws(PostgresError) in
            QueueStats(
                queue: try row.decode(String.self, at: 0),
                paused: try row.decode(Bool.self, at: 1),
                available: try row.decode(Int.self, at: 2),
                scheduled: try row.decode(Int.self, at: 3),
                running: try row.decode(Int.self, at: 4),
                dead: try row.decode(Int.self, at: 5),
                oldestAvailableAge: try row.decode(Double?.self, at: 6)
            )
        }
    }
}
