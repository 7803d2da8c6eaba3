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

extension JobQueue {
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
