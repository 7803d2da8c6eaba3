import Foundation
import PGQueue
import TestKit
import Testing

@Suite("schema.sql")
struct SchemaTests {
    @Test("psql -f schema.sql succeeds twice in a row on an empty database, without losing jobs")
    func appliesTwiceWithPsql() throws {
        let database = try TestDatabase()
        let connection = try database.connect()
        try connection.run(script: "DROP SCHEMA sluice CASCADE", context: "start empty")
        try psql(database.url)
        let id = try JobQueue().enqueue(NewJob(kind: "k"), on: connection)
        try psql(database.url)
        #expect(try InstalledSchema.read(on: connection)?.version == TestSchema.script.version)
        let count = try connection.query("SELECT count(*) FROM sluice.jobs WHERE id = $1", [id], context: "count")
            .single()
        #expect(try count.decode(Int.self, at: 0) == 1)
    }

    @Test("applying schema.sql again through libpq is harmless and takes no upgrade step")
    func appliesTwice() throws {
        let database = try TestDatabase()
        let connection = try database.connect()
        #expect(try TestSchema.script.apply(on: connection) == [])
        #expect(try TestSchema.script.apply(on: connection) == [])
        #expect(
            try InstalledSchema.read(on: connection)
                == InstalledSchema(version: TestSchema.script.version, servesFrom: TestSchema.script.servesFrom))
    }

    @Test("a release works against its own version and newer ones that still serve it, and nothing else")
    func compatibility() {
        let schema = InstalledSchema(version: 4, servesFrom: 3)
        #expect(schema.compatibility(withBuild: 4) == .current)
        #expect(schema.compatibility(withBuild: 3) == .served(installed: 4, build: 3))
        #expect(schema.compatibility(withBuild: 2) == .releaseTooOld(installed: 4, servesFrom: 3, build: 2))
        #expect(schema.compatibility(withBuild: 5) == .upgradeDue(installed: 4, build: 5))
        #expect(!InstalledSchema(version: 2, servesFrom: nil).compatibility(withBuild: 1).isUsable)
    }

    @Test("an older schema.sql refuses to run over a newer database")
    func refusesDowngrade() throws {
        let database = try TestDatabase()
        let connection = try database.connect()
        try connection.query("UPDATE sluice.schema_version SET version = version + 1", context: "pretend newer")
        let error = try #require(throws: PostgresError.self) { try TestSchema.script.apply(on: connection) }
        #expect(error.message.contains("newer than this schema.sql"))
    }

    /// Most Stripe events make a row of sluice.jobs pass the 2 kB at which PostgreSQL compresses it, and
    /// pglz cost a sixth of the database's work for each batch the receiver commits.
    @Test("job payloads are compressed with lz4, and a large one reads back whole")
    func payloadsUseLZ4() throws {
        let database = try TestDatabase()
        let connection = try database.connect()
        let hasLZ4 = try connection.query(
            "SELECT 'lz4' = ANY (enumvals) FROM pg_settings WHERE name = 'default_toast_compression'",
            context: "lz4"
        ).single().decode(Bool.self, at: 0)
        guard hasLZ4 else { return }  // a server built without lz4 keeps pglz
        let method = try connection.query(
            """
            SELECT attcompression::text FROM pg_attribute
            WHERE attrelid = 'sluice.jobs'::regclass AND attname = 'payload'
            """, context: "compression"
        ).single().decode(String.self, at: 0)
        #expect(method == "l")
        let body = String(repeating: #"{"object": "event", "id": "evt_1"} "#, count: 200)
        let id = try connection.query(
            "SELECT sluice.enqueue('k', jsonb_build_object('body', $1::text))", [body], context: "enqueue"
        ).single().decode(Int64.self, at: 0)
        let stored = try connection.query(
            "SELECT pg_column_compression(payload), payload ->> 'body' FROM sluice.jobs WHERE id = $1", [id],
            context: "read back"
        ).single()
        #expect(try stored.decode(String.self, at: 0) == "lz4")
        #expect(try stored.decode(String.self, at: 1) == body)
    }

    @Test("every table, view, index and function in schemas sluice and billing has a comment")
    func everythingCommented() throws {
        let database = try TestDatabase()
        let connection = try database.connect()
        let missing = try connection.query(
            """
            SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname IN ('sluice', 'billing') AND c.relkind IN ('r', 'v', 'i') AND obj_description(c.oid, 'pg_class') IS NULL
              AND c.relname NOT LIKE '%_pkey'
            UNION ALL
            SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
            WHERE n.nspname IN ('sluice', 'billing') AND obj_description(p.oid, 'pg_proc') IS NULL
            """,
            context: "finding objects without comments"
        ).map { try $0.decode(String.self, at: 0) }
        #expect(missing == [])
    }

    private func psql(_ url: String) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["psql", url, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", TestSchema.path]
        let errors = Pipe()
        process.standardError = errors
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        let message = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(process.terminationStatus == 0, "psql failed: \(message)")
        #expect(message.isEmpty, "psql printed: \(message)")
    }
}

@Suite("operator settings")
struct KindSettingsTests {
    @Test("sluice.kinds refuses timeouts that are not a positive finite number of seconds")
    func timeoutsMustBeFinite() throws {
        let database = try TestDatabase()
        let connection = try database.connect()
        for bad in ["0", "-1", "Infinity", "NaN"] {
            let error = try #require(throws: PostgresError.self) {
                try connection.query(
                    "INSERT INTO sluice.kinds (kind, timeout_seconds) VALUES ('k', $1::float8)", [bad],
                    context: "insert")
            }
            #expect(error.sqlState == "23514")
        }
        try connection.query("INSERT INTO sluice.kinds (kind, timeout_seconds) VALUES ('k', 2.5)", context: "insert")
        #expect(try JobQueue().kindTimeouts(on: connection) == ["k": 2.5])
    }
}
