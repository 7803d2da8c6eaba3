import Foundation
import Logging
import TestKit
import Testing

@testable import PGQueue

@Suite("libpq layer")
struct ConnectionTests {
    @Test("parameters and typed rows round-trip without string-built SQL")
    func parametersRoundTrip() throws {
        let database = try TestDatabase()
        let connection = try database.connect()
        let tricky = "it's \"quoted\" \\ back; DROP TABLE x; -- ünïcødé 🚀"
        let when = Date(timeIntervalSince1970: 1_700_000_000.123456)
        let row = try connection.query(
            "SELECT $1::text, $2::bigint, $3::boolean, $4::double precision, $5::timestamptz, $6::text, $7::text[], $8::bigint[]",
            [tricky, Int64.max, true, 2.5, when, nil, [tricky, "", "NULL"], [Int64(1), 2, 3]],
            context: "round-tripping parameters"
        ).single()
        #expect(try row.decode(String.self, at: 0) == tricky)
        #expect(try row.decode(Int64.self, at: 1) == Int64.max)
        #expect(try row.decode(Bool.self, at: 2) == true)
        #expect(try row.decode(Double.self, at: 3) == 2.5)
        let decodedDate = try row.decode(Date.self, at: 4)
        #expect(abs(decodedDate.timeIntervalSince1970 - when.timeIntervalSince1970) < 0.000_002)
        #expect(try row.decode(String?.self, at: 5) == nil)
        let array = try connection.query(
            "SELECT unnest($1::text[])", [[tricky, "", "NULL", #"\"""\\"#, "{a,b}"]], context: "unnesting"
        ).map { try $0.decode(String.self, at: 0) }
        #expect(array == [tricky, "", "NULL", #"\"""\\"#, "{a,b}"])
        let withNull = try connection.query(
            "SELECT x IS NULL FROM unnest($1::text[]) AS x", [["a", nil] as [String?]], context: "nulls in arrays")
        #expect(try withNull.map { try $0.decode(Bool.self, at: 0) } == [false, true])
    }

    @Test("prepared text, varchar and jsonb arrays go in binary and arrive exactly, NULLs and empty arrays too")
    func binaryArrays() throws {
        let database = try TestDatabase()
        let connection = try database.connect()
        let statement = PreparedStatement(
            name: "binary_arrays",
            sql: """
                SELECT $1::text[] = $2::text[], $3::varchar[], $4::jsonb[], cardinality($5::text[]), $6::integer[]
                """)
        let tricky = ["it's \"quoted\" \\ back", "", "NULL", "{a,b}", "ünïcødé 🚀", #"\"""\\"#]
        let json = [#"{"body":"{\"id\":\"evt_1\"}","n":1}"#, "[]", "null"]
        let row = try connection.execute(
            statement,
            [
                tricky, tricky.map(Optional.some) + [nil], ["a", nil] as [String?], json, [String](), ["1", "2"],
            ],
            context: "binary arrays"
        ).single()
        #expect(try row.decode(Bool.self, at: 0) == false)  // one more element, a NULL, on the right
        #expect(try row.decode(String.self, at: 1) == "{a,NULL}")
        #expect(
            try row.decode(String.self, at: 2) == #"{"{\"n\": 1, \"body\": \"{\\\"id\\\":\\\"evt_1\\\"}\"}",[],"null"}"#
        )
        #expect(try row.decode(Int.self, at: 3) == 0)
        #expect(try row.decode(String.self, at: 4) == "{1,2}")  // integer[] has no binary path: sent as text
        let echoed = try connection.query(
            "SELECT unnest($1::text[])", [tricky], context: "the same strings as a text literal"
        ).map { try $0.decode(String.self, at: 0) }
        let binary = try connection.execute(
            PreparedStatement(name: "binary_unnest", sql: "SELECT unnest($1::text[])"), [tricky], context: "binary"
        ).map { try $0.decode(String.self, at: 0) }
        #expect(binary == tricky && echoed == tricky)
        // Invalid JSON in a jsonb element is the server's clear error, as in text.
        let error = try #require(throws: PostgresError.self) {
            try connection.execute(statement, [[], [], [], ["{"], [], []], context: "bad json")
        }
        #expect(error.sqlState == "22P02")
    }

    @Test("a server error carries its SQLSTATE, message and the caller's context")
    func serverErrors() throws {
        let database = try TestDatabase()
        let connection = try database.connect()
        let error = try #require(throws: PostgresError.self) {
            try connection.query("SELECT 1 / $1::integer", [0], context: "dividing by zero on purpose")
        }
        #expect(error.code == .serverError)
        #expect(error.sqlState == "22012")
        #expect(error.message.contains("division by zero"))
        #expect(error.description.contains("dividing by zero on purpose"))
        // The connection is still usable after a statement error.
        #expect(try connection.query("SELECT 1", context: "after an error").single().decode(Int.self, at: 0) == 1)
    }

    @Test("decoding the wrong type names the column")
    func decodingErrors() throws {
        let database = try TestDatabase()
        let connection = try database.connect()
        let row = try connection.query("SELECT 'abc'::text AS word", context: "decoding").single()
        let error = try #require(throws: PostgresError.self) { try row.decode(Int.self, at: 0) }
        #expect(error.code == .decodingFailed)
        #expect(error.message.contains("word"))
    }

    @Test("a transaction commits when its body returns and rolls back when it throws")
    func transactions() throws {
        struct Abort: Error {}
        let database = try TestDatabase()
        let connection = try database.connect()
        try connection.run(script: "CREATE TABLE t (x int)", context: "setup")
        try connection.transaction(context: "committing") { tx in
            try tx.query("INSERT INTO t VALUES (1)", context: "insert")
        }
        #expect(throws: Abort.self) {
            try connection.transaction(context: "rolling back") { tx in
                try tx.query("INSERT INTO t VALUES (2)", context: "insert")
                throw Abort()
            }
        }
        #expect(!connection.isInTransaction)
        let values = try connection.query("SELECT x FROM t ORDER BY x", context: "read").map {
            try $0.decode(Int.self, at: 0)
        }
        #expect(values == [1])
    }

    @Test(
        "queue connections plan completions on the primary key even when the queue was measured empty, reconnects too")
    func queueSessionSettings() throws {
        let database = try TestDatabase()
        let setup = try database.connect()
        // What autovacuum leaves after an idle spell: statistics that say the table is empty.
        try setup.run(script: "VACUUM ANALYZE sluice.jobs", context: "measuring the empty queue")
        let completion = """
            EXPLAIN DELETE FROM sluice.jobs j USING unnest($1::bigint[], $2::integer[]) AS c(id, attempt)
            WHERE j.id = c.id AND j.attempt = c.attempt AND j.state = 'running'
            """
        func plan(_ connection: PostgresConnection) throws -> String {
            try connection.query(completion, [[Int64(1)], [1]], context: "planning a completion")
                .map { try $0.decode(String.self, at: 0) }.joined(separator: "\n")
        }
        // A plain connection scans the whole table, which is what made a million jobs drain slowly.
        #expect(try plan(setup).contains("Seq Scan on jobs"))
        let queueConnection = try PostgresConnection(
            connectionString: database.url, sessionSettings: JobQueue.sessionSettings)
        #expect(try !plan(queueConnection).contains("Seq Scan on jobs"))
        let pid = try #require(queueConnection.serverProcessID)
        try setup.query("SELECT pg_terminate_backend($1)", [pid], context: "killing the backend")
        _ = try? queueConnection.query("SELECT 1", context: "noticing the lost connection")
        #expect(try !plan(queueConnection).contains("Seq Scan on jobs"))
        #expect(queueConnection.serverProcessID != pid)
    }

    @Test("TCP connections probe with keepalives after 30 s idle, unless the connection string says otherwise")
    func keepalives() throws {
        let database = try TestDatabase()
        let connection = try database.connect()
        // Keepalives are a TCP matter; a test database reached over a Unix socket has nothing to check.
        guard connection.usesTCP else { return }
        #expect(connection.keepaliveIdleSeconds == 30)
        let separator = database.url.contains("?") ? "&" : "?"
        let chosen = try PostgresConnection(connectionString: database.url + separator + "keepalives_idle=45")
        #expect(chosen.keepaliveIdleSeconds == 45)
    }

    @Test("a killed backend surfaces as connectionLost and the next call reconnects, prepared statements included")
    func reconnects() throws {
        let database = try TestDatabase()
        let connection = try database.connect()
        let statement = PreparedStatement(name: "test_add", sql: "SELECT $1::integer + 1")
        #expect(try connection.execute(statement, [1], context: "first run").single().decode(Int.self, at: 0) == 2)
        let pid = try #require(connection.serverProcessID)
        let admin = try database.connect()
        try admin.query("SELECT pg_terminate_backend($1)", [pid], context: "killing the backend")
        let error = try #require(throws: PostgresError.self) {
            try connection.execute(statement, [1], context: "running on a dead connection")
        }
        #expect(error.code == .connectionLost)
        #expect(error.isTransient)
        #expect(
            try connection.execute(statement, [2], context: "after reconnecting").single().decode(Int.self, at: 0) == 3)
        #expect(connection.serverProcessID != pid)
    }

    @Test("an unreachable server gives connectionFailed with advice")
    func connectionFailure() throws {
        let error = try #require(throws: PostgresError.self) {
            _ = try PostgresConnection(connectionString: "postgresql://nobody@127.0.0.1:1/none?connect_timeout=2")
        }
        #expect(error.code == .connectionFailed)
        #expect(error.description.contains("DATABASE_URL"))
    }

    @Test("the listener delivers notifications from its socket and listens again after its backend is killed")
    func listenerReconnects() throws {
        let database = try TestDatabase()
        let recorder = try NotificationRecorder(url: database.url, channel: "test_channel")
        let sender = try database.connect()
        try sender.query("SELECT pg_notify('test_channel', 'one')", context: "notify")
        #expect(eventually { recorder.notifications.map(\.payload) == ["one"] })

        try sender.query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE 'LISTEN%' AND datname = current_database()",
            context: "killing the listener's backend")
        #expect(eventually { recorder.connectCount >= 2 })
        try sender.query("SELECT pg_notify('test_channel', 'two')", context: "notify")
        #expect(eventually { recorder.notifications.map(\.payload) == ["one", "two"] })
    }
}
