extension JobQueue {
    /// Deletes up to `batchSize` unique keys past their retention; returns how many.
    @discardableResult
    public func pruneUniqueKeys(batchSize: Int = 1000, on connection: PostgresConnection) throws(PostgresError) -> Int {
        let rows = try connection.query(
            "SELECT sluice.prune_unique_keys($1)", [batchSize], context: "pruning expired unique keys")
        return try rows.single().decode(Int.self, at: 0)
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
