/// The database schema this build of Sluice was made with: `schema.sql`, compiled in.
public enum Schema {
    /// The text of `schema.sql`.
    public static var sql: String { EmbeddedSchema.sql }

    /// The version `schema.sql` declares in its `-- schema-version: N` line.
    public static let version: Int = {
        for line in EmbeddedSchema.sql.split(separator: "\n", omittingEmptySubsequences: true) {
            let prefix = "-- schema-version:"
            if line.hasPrefix(prefix), let number = Int(line.dropFirst(prefix.count).filter { !$0.isWhitespace }) {
                return number
            }
        }
        preconditionFailure("schema.sql has no '-- schema-version: N' line; the build embedded the wrong file")
    }()

    /// Applies `schema.sql`: creates what is missing, upgrades an older version in place.
    public static func apply(on connection: PostgresConnection) throws(PostgresError) {
        try connection.run(script: sql, context: "applying schema.sql (version \(version))")
    }

    /// The version recorded in the database, or nil when the schema was never applied.
    public static func installedVersion(on connection: PostgresConnection) throws(PostgresError) -> Int? {
        let context = "reading the schema version"
        let exists = try connection.query("SELECT to_regclass('sluice.schema_version') IS NOT NULL", context: context)
        guard try exists.single().decode(Bool.self, at: 0) else { return nil }
        let rows = try connection.query("SELECT version FROM sluice.schema_version", context: context)
        return try rows.first?.decode(Int.self, at: 0)
    }
}
