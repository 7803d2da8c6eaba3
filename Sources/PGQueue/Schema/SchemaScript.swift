/// A schema script in the shape of Sluice's `schema.sql`: one transaction that creates what is missing,
/// upgrades what an older version made, and stamps `sluice.schema_version` last.
///
/// PGQueue knows the queue's part of that contract (the version table, the dry-run signal) and nothing
/// of what else the script creates, so its users pass the text: the `sluice` executable embeds the
/// repository's `schema.sql`, tests read it from the checkout.
///
/// ```swift
/// let script = try SchemaScript(sql: String(contentsOfFile: "schema.sql", encoding: .utf8))
/// let steps = try script.apply(on: connection)
/// ```
public struct SchemaScript: Sendable {
    /// The script's text.
    public let sql: String
    /// The version it declares with `SET LOCAL sluice.schema_version = N;`.
    public let version: Int
    /// The oldest version whose release still works against it (`SET LOCAL sluice.serves_from = N;`).
    public let servesFrom: Int

    /// Reads the versions the script declares.
    /// - Throws: ``SchemaScriptError`` when a declaration is missing or not a whole number.
    public init(sql: String) throws(SchemaScriptError) {
        self.sql = sql
        self.version = try Self.declared("sluice.schema_version", in: sql)
        self.servesFrom = try Self.declared("sluice.serves_from", in: sql)
    }

    /// Applies the script: creates the schema, or upgrades an older one in place, in one transaction.
    /// - Returns: the upgrade steps this run took (empty when there was nothing to upgrade).
    /// - Throws: `PostgresError`, after rolling back, when any statement fails.
    @discardableResult
    public func apply(on connection: PostgresConnection) throws(PostgresError) -> [String] {
        let before = try lastUpgradeID(on: connection)
        try run(on: connection, context: "applying schema.sql (version \(version))")
        guard let after = try lastUpgradeID(on: connection), after != before else { return [] }
        let rows = try connection.query(
            "SELECT array_to_string(steps, E'\\n') FROM sluice.schema_upgrades WHERE id = $1", [after],
            context: "reading the upgrade steps")
        return try (rows.first?.decode(String.self, at: 0) ?? "").split(separator: "\n").map(String.init)
    }

    /// Runs the script and rolls it back: what `sluice migrate --dry-run` shows.
    ///
    /// It takes the same locks as a real run, for as long as the script takes.
    /// - Returns: the upgrade steps a real run would take now.
    public func dryRun(on connection: PostgresConnection) throws(PostgresError) -> [String] {
        try connection.run(script: "SET sluice.dry_run = on", context: "starting a dry run")
        defer { try? connection.run(script: "RESET sluice.dry_run", context: "ending a dry run") }
        do {
            try run(on: connection, context: "dry run of schema.sql (version \(version))")
        } catch  where error.sqlState == Self.dryRunState {
            return (error.detail ?? "").split(separator: "\n").map(String.init)
        }
        throw PostgresError(
            code: .protocolViolation, message: "schema.sql did not end its dry run; nothing may have been rolled back",
            context: "dry run of schema.sql")
    }

    /// The SQLSTATE the script raises at its end in a dry run, carrying the steps in its detail.
    static let dryRunState = "SL001"

    private func run(on connection: PostgresConnection, context: String) throws(PostgresError) {
        do {
            try connection.run(script: sql, context: context)
        } catch {
            // A failed statement leaves the script's transaction open and aborted: end it.
            try? connection.run(script: "ROLLBACK", context: "rolling back schema.sql")
            throw error
        }
    }

    private func lastUpgradeID(on connection: PostgresConnection) throws(PostgresError) -> Int? {
        let context = "reading the upgrade history"
        let exists = try connection.query("SELECT to_regclass('sluice.schema_upgrades') IS NOT NULL", context: context)
        guard try exists.single().decode(Bool.self, at: 0) else { return nil }
        return try connection.query("SELECT max(id) FROM sluice.schema_upgrades", context: context)
            .single().decode(Int?.self, at: 0)
    }

    private static func declared(_ name: String, in sql: String) throws(SchemaScriptError) -> Int {
        let prefix = "SET LOCAL \(name) = "
        for line in sql.split(separator: "\n") where line.hasPrefix(prefix) {
            guard line.hasSuffix(";"), let number = Int(line.dropFirst(prefix.count).dropLast()) else { break }
            return number
        }
        throw SchemaScriptError(
            message: "the schema script does not declare '\(prefix)N;' on a line of its own: is it Sluice's schema.sql?"
        )
    }
}

/// A schema script that does not declare its versions.
public struct SchemaScriptError: Error, Sendable, CustomStringConvertible {
    /// What is wrong, and what to do.
    public var message: String
    public var description: String { message }
}
