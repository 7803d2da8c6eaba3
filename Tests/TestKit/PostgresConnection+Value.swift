public import PGQueue

extension PostgresConnection {
    /// The first column of the first row as text (nil for no row or NULL): what most expectations read.
    public func firstValue(_ sql: String) throws -> String? {
        let rows = try query(sql, context: "reading")
        guard let row = rows.first else { return nil }
        return try row.decode(String?.self, at: 0)
    }
}
