public import Foundation

/// A job that failed for good, as kept in `sluice.dead_letters`.
public struct DeadLetter: Sendable, Hashable {
    public var id: Int64
    public var queue: String
    public var kind: String
    /// The payload as JSON text.
    public var payload: String
    public var attempt: Int
    public var maxAttempts: Int
    /// The error history as a JSON array of `{"attempt", "at", "error", "kind"}`.
    public var errors: String
    /// `attempts_exhausted`, `permanent_failure` or `lease_expired`.
    public var reason: String
    public var uniqueKey: String?
    public var createdAt: Date
    public var diedAt: Date
}

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
    /// Removes a waiting job; false when there is no such waiting job (running jobs cannot be cancelled).
    @discardableResult
    public func cancel(jobID: Int64, on connection: PostgresConnection) throws(PostgresError) -> Bool {
        let rows = try connection.query("SELECT sluice.cancel($1)", [jobID], context: "cancelling job \(jobID)")
        return try rows.single().decode(Bool.self, at: 0)
    }

    /// Stops workers claiming from a queue; its jobs keep waiting.
    public func pause(queue: String, on connection: PostgresConnection) throws(PostgresError) {
        try connection.query("SELECT sluice.pause_queue($1)", [queue], context: "pausing queue \(queue)")
    }

    /// Lets workers claim from a paused queue again.
    public func resume(queue: String, on connection: PostgresConnection) throws(PostgresError) {
        try connection.query("SELECT sluice.resume_queue($1)", [queue], context: "resuming queue \(queue)")
    }

    /// Moves a dead letter back to its queue under the same id, with attempts reset.
    /// - Throws: `PostgresError` with SQLSTATE `P0002` when there is no such dead letter, `23505` when
    ///   another job holds its unique key.
    @discardableResult
    public func retryDead(id: Int64, on connection: PostgresConnection) throws(PostgresError) -> Int64 {
        let rows = try connection.query("SELECT sluice.retry_dead($1)", [id], context: "retrying dead letter \(id)")
        return try rows.single().decode(Int64.self, at: 0)
    }

    /// Retries every dead letter of a kind; returns how many went back.
    @discardableResult
    public func retryDead(kind: String, on connection: PostgresConnection) throws(PostgresError) -> Int {
        let rows = try connection.query(
            "SELECT sluice.retry_dead_kind($1)", [kind], context: "retrying dead letters of kind \(kind)")
        return try rows.single().decode(Int.self, at: 0)
    }

    /// Deletes one dead letter; false when there was none with that id.
    @discardableResult
    public func discardDead(id: Int64, on connection: PostgresConnection) throws(PostgresError) -> Bool {
        let rows = try connection.query("SELECT sluice.discard_dead($1)", [id], context: "discarding dead letter \(id)")
        return try rows.single().decode(Bool.self, at: 0)
    }

    /// Dead letters, newest first, optionally of one kind.
    public func deadLetters(kind: String? = nil, limit: Int = 100, on connection: PostgresConnection)
        throws(PostgresError) -> [DeadLetter]
    {
        let rows = try connection.query(
            """
            SELECT id, queue, kind, payload::text, attempt, max_attempts, errors::text, reason, unique_key,
                   created_at, died_at
            FROM sluice.dead_letters
            WHERE $1::text IS NULL OR kind = $1
            ORDER BY died_at DESC, id DESC
            LIMIT $2
            """,
            [kind, limit],
            context: "listing dead letters"
        )
        return try rows.map(Self.deadLetter)
    }

    /// One dead letter, or nil.
    public func deadLetter(id: Int64, on connection: PostgresConnection) throws(PostgresError) -> DeadLetter? {
        let rows = try connection.query(
            """
            SELECT id, queue, kind, payload::text, attempt, max_attempts, errors::text, reason, unique_key,
                   created_at, died_at
            FROM sluice.dead_letters WHERE id = $1
            """,
            [id],
            context: "reading dead letter \(id)"
        )
        return try rows.first.map(Self.deadLetter)
    }

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

    /// Deletes up to `batchSize` unique keys past their retention; returns how many.
    @discardableResult
    public func pruneUniqueKeys(batchSize: Int = 1000, on connection: PostgresConnection) throws(PostgresError) -> Int {
        let rows = try connection.query(
            "SELECT sluice.prune_unique_keys($1)", [batchSize], context: "pruning expired unique keys")
        return try rows.single().decode(Int.self, at: 0)
    }

    private static func deadLetter(_ row: PostgresRow) throws(PostgresError) -> DeadLetter {
        DeadLetter(
            id: try row.decode(Int64.self, at: 0),
            queue: try row.decode(String.self, at: 1),
            kind: try row.decode(String.self, at: 2),
            payload: try row.decode(String.self, at: 3),
            attempt: try row.decode(Int.self, at: 4),
            maxAttempts: try row.decode(Int.self, at: 5),
            errors: try row.decode(String.self, at: 6),
            reason: try row.decode(String.self, at: 7),
            uniqueKey: try row.decode(String?.self, at: 8),
            createdAt: try row.decode(Date.self, at: 9),
            diedAt: try row.decode(Date.self, at: 10)
        )
    }
}

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

    /// Trims the error history of long-retrying jobs to their last `keep` entries, at most `batchSize` jobs.
    @discardableResult
    public func trimErrorHistory(keep: Int, batchSize: Int = 1000, on connection: PostgresConnection)
        throws(PostgresError)
        -> Int
    {
        let rows = try connection.query(
            "SELECT sluice.trim_error_history($1, $2)", [keep, batchSize], context: "trimming error histories")
        return try rows.single().decode(Int.self, at: 0)
    }

    /// Deletes up to `batchSize` dead letters that died more than `olderThan` seconds ago.
    @discardableResult
    public func pruneDeadLetters(olderThan seconds: Double, batchSize: Int = 1000, on connection: PostgresConnection)
        throws(PostgresError) -> Int
    {
        let rows = try connection.query(
            "SELECT sluice.prune_dead_letters(make_interval(secs => $1), $2)", [seconds, batchSize],
            context: "pruning old dead letters")
        return try rows.single().decode(Int.self, at: 0)
    }
}

extension JobQueue {
    /// One batch of `sluice.prune`: expired unique keys, and dead letters and job results past the retention
    /// that `sluice.settings` holds, at most `batchSize` rows from each table.
    /// - Returns: how many rows left each table, by its qualified name.
    public func prune(batchSize: Int = 1000, on connection: PostgresConnection) throws(PostgresError) -> [String: Int] {
        try Self.prunedCounts(
            connection.query(
                "SELECT table_name, pruned FROM sluice.prune($1)", [batchSize], context: "pruning the queue's tables"))
    }

    /// Reads rows of `(table_name text, pruned integer)`, as the schema's prune functions return them.
    public static func prunedCounts(_ rows: PostgresRows) throws(PostgresError) -> [String: Int] {
        var counts: [String: Int] = [:]
        for row in rows {
            counts[try row.decode(String.self, at: 0)] = try row.decode(Int.self, at: 1)
        }
        return counts
    }
}
