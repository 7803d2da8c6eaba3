import Foundation
import PGQueue
import TestKit
import Testing

/// Every schema.sql that was ever committed, frozen in Tests/Fixtures/schemas, upgrades in place to the
/// current one: the same catalog as a fresh install, and every row still there.
@Suite("schema upgrades")
struct SchemaUpgradeTests {
    static let folder = Repository.url("Tests/Fixtures/schemas")

    /// Every frozen schema but the newest, which is schema.sql itself.
    static let pastSchemas: [String] = {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? []
        return Array(names.filter { $0.first?.isNumber == true && $0.hasSuffix(".sql") }.sorted().dropLast())
    }()

    /// The catalog of a fresh install by psql, made once.
    static let freshDump: Result<[String], any Error> = Result {
        let database = try TestDatabase(empty: true)
        try SchemaTools.psql(database.url, file: TestSchema.path)
        return try SchemaTools.normalisedSchemaDump(database.url)
    }

    @Test("the history holds every past schema: thirteen of versions 1 and 2, then one per version")
    func historyIsComplete() {
        #expect(Self.pastSchemas.count >= 13)
        #expect(Self.pastSchemas.first == "01-v1-d349938.sql")
    }

    @Test(
        "a database of a past schema, with rows in every table, upgrades in place to a fresh install's catalog",
        arguments: pastSchemas)
    func upgradesInPlace(schema: String) throws {
        let database = try TestDatabase(empty: true)
        try SchemaTools.psql(database.url, file: Self.folder.appendingPathComponent(schema).path)
        try SchemaTools.psql(database.url, file: Self.folder.appendingPathComponent("seed.sql").path)
        let connection = try database.connect()
        let before = try Self.snapshot(on: connection, columns: nil, excluding: Self.rewrittenOnPurpose)
        let empty = before.filter { $0.value.rows.isEmpty }.map(\.key)
        #expect(empty.isEmpty, "seed.sql leaves tables of \(schema) empty: \(empty)")

        let steps = try TestSchema.script.apply(on: connection)
        #expect(try InstalledSchema.read(on: connection)?.version == TestSchema.script.version)
        // Applying it again finds nothing left to upgrade.
        #expect(try TestSchema.script.apply(on: connection) == [])

        // Every row is still there, unchanged in the columns it had; only the version stamp moves, and
        // settings gain rows for what the new version adds.
        let after = try Self.snapshot(
            on: connection, columns: before.mapValues(\.columns), excluding: Self.rewrittenOnPurpose)
        for (table, old) in before where table != "sluice.schema_version" {
            let kept = Set(after[table]?.rows ?? [])
            let lost = old.rows.filter { !kept.contains($0) }
            #expect(lost.isEmpty, "rows of \(table) lost or changed upgrading \(schema) (steps: \(steps)): \(lost)")
        }
        let dump = try SchemaTools.normalisedSchemaDump(database.url)
        let fresh = try Self.freshDump.get()
        let missing = fresh.filter { !dump.contains($0) }
        let extra = dump.filter { !fresh.contains($0) }
        #expect(dump == fresh, "catalog after upgrading \(schema) differs; missing: \(missing); extra: \(extra)")
    }

    @Test("a dry run lists the upgrade steps and changes nothing")
    func dryRun() throws {
        let database = try TestDatabase(empty: true)
        try SchemaTools.psql(database.url, file: Self.folder.appendingPathComponent("13-v2-835d844.sql").path)
        let connection = try database.connect()
        let steps = try TestSchema.script.dryRun(on: connection)
        #expect(steps.contains("add column sluice.schema_version.serves_from integer"), "\(steps)")
        #expect(try InstalledSchema.read(on: connection) == InstalledSchema(version: 2, servesFrom: nil))
        // The connection is usable afterwards, and a real run takes the same steps.
        #expect(try TestSchema.script.apply(on: connection) == steps)
        #expect(try TestSchema.script.dryRun(on: connection) == [])
    }

    /// Columns an upgrade step rewrites on purpose, left out of the comparison of rows: version 7 recomputes
    /// every subscription's lifecycle rank (incomplete 1, live 2, terminal 3).
    static let rewrittenOnPurpose: [String: Set<String>] = ["billing.subscriptions": ["rank"]]

    struct TableState: Equatable {
        var columns: [String]
        var rows: [String]
    }

    /// Per table of schemas sluice and billing: its columns (or the given ones), and its rows over those
    /// columns as text (the seeded tables are small).
    static func snapshot(
        on connection: PostgresConnection, columns fixed: [String: [String]]?, excluding: [String: Set<String>] = [:]
    ) throws -> [String: TableState] {
        let tables = try connection.query(
            """
            SELECT c.oid::regclass::text, array_to_string(array_agg(quote_ident(a.attname) ORDER BY a.attnum), ',')
            FROM pg_class c
            JOIN pg_namespace n ON n.oid = c.relnamespace
            JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
            WHERE n.nspname IN ('sluice', 'billing') AND c.relkind = 'r'
            GROUP BY c.oid
            """, context: "listing tables"
        ).map { row throws(PostgresError) in
            (
                try row.decode(String.self, at: 0),
                try row.decode(String.self, at: 1).split(separator: ",").map(String.init)
            )
        }
        var states: [String: TableState] = [:]
        for (table, current) in tables {
            guard var columns = fixed.map({ $0[table] }) ?? current else { continue }
            columns.removeAll { excluding[table]?.contains($0) == true }
            let list = columns.joined(separator: ", ")
            let rows = try connection.query(
                "SELECT r::text FROM (SELECT \(list) FROM \(table)) AS r", context: "reading \(table)"
            ).map { row throws(PostgresError) in try row.decode(String.self, at: 0) }
            states[table] = TableState(columns: columns, rows: rows)
        }
        return states
    }
}
