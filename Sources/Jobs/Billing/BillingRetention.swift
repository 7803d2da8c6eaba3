public import PGQueue

/// Prunes the billing tables that grow with traffic, by the retentions in `billing.settings`.
public enum BillingRetention {
    /// One batch of `billing.prune`: at most `batchSize` rows from each table.
    /// - Returns: how many rows left each table, by its qualified name.
    public static func prune(batchSize: Int = 1000, on connection: PostgresConnection) throws(PostgresError)
        -> [String: Int]
    {
        try JobQueue.prunedCounts(
            connection.query(
                "SELECT table_name, pruned FROM billing.prune($1)", [batchSize], context: "pruning the billing tables"))
    }
}
