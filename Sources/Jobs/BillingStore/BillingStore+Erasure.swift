public import PGQueue

extension BillingStore {
    /// Every erasure listed in `billing.erasures`, oldest first.
    public func erasures() throws(PostgresError) -> [ErasureList.Entry] {
        try connection.query(
            "SELECT user_id, version FROM billing.erasures ORDER BY erased_at, user_id", context: "reading erasures"
        ).map { row throws(PostgresError) in
            ErasureList.Entry(userID: try row.decode(String.self, at: 0), version: try row.decode(Int64.self, at: 1))
        }
    }

    /// Erases a user again from a listed erasure (after a restore), as the deletion did.
    /// - Returns: true when the user was erased now, false when the erasure was already applied.
    public func reapply(_ erasure: ErasureList.Entry) throws(PostgresError) -> Bool {
        try connection.query(
            "SELECT billing.erase_user($1, $2, $3, 'erasure.reapplied')",
            [erasure.userID, erasure.version, "reapplied:\(erasure.userID)"], context: "erasing \(erasure.userID)"
        ).single().decode(Bool.self, at: 0)
    }
}
