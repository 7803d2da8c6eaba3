import Foundation
import PGQueue
import TestKit
import Testing

/// Two traps of schema version 10, closed in version 11: sluice.enqueue and sluice.enqueue_unique each had
/// their own copy of the unique-key protocol (now one, sluice.insert_unique_jobs), and billing.write dropped
/// a key of its fields that named no column without a word.
@Suite("schema traps: one unique-key protocol, and billing.write's unknown keys")
struct SchemaTrapTests {
    static let write = """
        SELECT billing.write('customers', 'cus_trap', $1::jsonb, $2::bigint, 1::smallint, 'stripe', $3::text,
                             'customer.updated') ->> 'email'
        """

    @Test("billing.write refuses a misspelt key with SL400 naming it and the table, on insert and on update")
    func billingWriteRefusesUnknownKeys() throws {
        let database = try TestDatabase()
        let connection = try database.connect()

        // No row yet: the insert path, which used to drop the key and store the row without an email.
        let onInsert = try #require(throws: PostgresError.self) {
            try connection.query(
                Self.write, [#"{"emial": "a@example.com", "name": "A"}"#, 1, "evt_1"], context: "write")
        }
        #expect(onInsert.sqlState == "SL400")
        #expect(onInsert.message.contains(#"billing.customers has no column "emial""#), "\(onInsert.message)")
        #expect(onInsert.hint?.contains("billing.customers") == true)
        #expect(try Self.count("SELECT count(*) FROM billing.customers", on: connection) == 0)

        // Every unknown key is named, in order.
        let twoKeys = try #require(throws: PostgresError.self) {
            try connection.query(
                Self.write, [#"{"nmae": "A", "emial": "a@example.com"}"#, 1, "evt_2"], context: "write")
        }
        #expect(twoKeys.message.contains(#"has no column "emial" or "nmae""#), "\(twoKeys.message)")

        // Valid keys go through.
        let inserted = try connection.query(Self.write, [#"{"email": "a@example.com"}"#, 1, "evt_3"], context: "write")
        #expect(try inserted.single().decode(String.self, at: 0) == "a@example.com")

        // The row exists: the update path, which used to fail with 42703 from the UPDATE it built.
        let onUpdate = try #require(throws: PostgresError.self) {
            try connection.query(
                Self.write, [#"{"email": "b@example.com", "naem": "B"}"#, 2, "evt_4"], context: "write")
        }
        #expect(onUpdate.sqlState == "SL400")
        #expect(onUpdate.message.contains(#"billing.customers has no column "naem""#), "\(onUpdate.message)")

        // An older event is refused too, rather than skipped as older: the key is a bug whatever the version.
        let older = try #require(throws: PostgresError.self) {
            try connection.query(Self.write, [#"{"emial": "c@example.com"}"#, 0, "evt_5"], context: "write")
        }
        #expect(older.sqlState == "SL400")

        let row = try connection.query(
            "SELECT email || ' ' || version FROM billing.customers WHERE id = 'cus_trap'", context: "read")
        #expect(try row.single().decode(String.self, at: 0) == "a@example.com 1")
        let audit = try connection.query(
            """
            SELECT string_agg(action || ':' || event_id, ',' ORDER BY id) FROM billing.audit_log
            WHERE entity_id = 'cus_trap'
            """, context: "read")
        #expect(try audit.single().decode(String.self, at: 0) == "created:evt_3")
    }

    @Test("a key taken by either enqueue function is a duplicate to the other while its job waits or is retained")
    func duplicatesAcrossFunctions() throws {
        let database = try TestDatabase()
        let connection = try database.connect()
        let queue = JobQueue(uniqueRetentionSeconds: 3600)
        let single = try queue.enqueue(NewJob(kind: "k", uniqueKey: "by-enqueue"), on: connection)
        let batch = try queue.enqueueUnique([NewJob(kind: "k", uniqueKey: "by-batch")], on: connection)
        guard case .enqueued(let batched) = batch.first else {
            Issue.record("expected a new job for a new key, got \(batch)")
            return
        }

        // While the jobs wait.
        let repeated = NewJob(kind: "k", payload: #"{"n": 2}"#, uniqueKey: "by-batch")
        #expect(try queue.enqueue(repeated, on: connection) == batched)
        #expect(
            try queue.enqueueUnique([NewJob(kind: "k", uniqueKey: "by-enqueue")], on: connection)
                == [.duplicate(jobID: single)])

        // After they completed, within the retention.
        let jobs = try queue.claim(from: "default", limit: 10, on: connection)
        #expect(Set(jobs.map(\.id)) == [single, batched])
        #expect(try Set(queue.complete(jobs.map(\.lease), on: connection)) == [single, batched])
        #expect(try queue.enqueue(NewJob(kind: "k", uniqueKey: "by-batch"), on: connection) == batched)
        #expect(
            try queue.enqueueUnique([NewJob(kind: "k", uniqueKey: "by-enqueue")], on: connection)
                == [.duplicate(jobID: single)])
        #expect(try Self.count("SELECT count(*) FROM sluice.jobs", on: connection) == 0)

        // Past the retention, either takes the other's key over with a new job.
        try connection.query("UPDATE sluice.unique_keys SET expires_at = now() - interval '1 second'", context: "age")
        let takenBySingle = try queue.enqueue(NewJob(kind: "k", uniqueKey: "by-batch"), on: connection)
        #expect(takenBySingle != batched)
        let takenByBatch = try queue.enqueueUnique([NewJob(kind: "k", uniqueKey: "by-enqueue")], on: connection)
        guard case .enqueued(let id) = takenByBatch.first else {
            Issue.record("an expired key should be taken over, got \(takenByBatch)")
            return
        }
        #expect(id != single)
        #expect(try Self.count("SELECT count(*) FROM sluice.jobs", on: connection) == 2)
    }

    @Test("a key still contended after three rounds fails both functions with 40001 naming it, and adds nothing")
    func contendedKeys() throws {
        let database = try TestDatabase()
        let connection = try database.connect()
        // A race lost three rounds running, made to order: an expired key whose row cannot be deleted, so no
        // round can take it over. The trigger's function lives in this session's temporary schema.
        try connection.run(
            script: """
                CREATE FUNCTION pg_temp.keep_row() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$;
                CREATE TRIGGER keep_row BEFORE DELETE ON sluice.unique_keys
                    FOR EACH ROW EXECUTE FUNCTION pg_temp.keep_row();
                INSERT INTO sluice.unique_keys (key, job_id, expires_at) VALUES ('stuck', -1, now() - interval '1 day');
                """, context: "a key that never frees")

        let single = try #require(throws: PostgresError.self) {
            try JobQueue().enqueue(NewJob(kind: "k", uniqueKey: "stuck"), on: connection)
        }
        #expect(single.sqlState == "40001")
        #expect(single.isTransient)
        #expect(single.message.contains("sluice.enqueue: unique key stuck is contended"), "\(single.message)")

        let batch = try #require(throws: PostgresError.self) {
            try JobQueue().enqueueUnique(
                [NewJob(kind: "k", uniqueKey: "fresh"), NewJob(kind: "k", uniqueKey: "stuck")], on: connection)
        }
        #expect(batch.sqlState == "40001")
        #expect(
            batch.message.contains("sluice.enqueue_unique: unique keys {stuck} are contended"), "\(batch.message)")
        #expect(try Self.count("SELECT count(*) FROM sluice.jobs", on: connection) == 0)
    }

    @Test("the shared protocol is granted to nobody: only the owner's enqueue functions run it")
    func protocolIsInternal() throws {
        let database = try TestDatabase()
        let connection = try database.connect()
        let grants = try connection.query(
            """
            SELECT p.proacl IS NOT NULL, p.prosecdef,
                   (SELECT count(*) FROM aclexplode(p.proacl) a WHERE a.grantee <> p.proowner)
            FROM pg_proc p
            WHERE p.oid = to_regprocedure(
                'sluice.insert_unique_jobs(text[], jsonb[], text[], text[], integer[], timestamptz[], integer[])')
            """, context: "reading the helper's privileges"
        ).single()
        // A NULL ACL is the default one, which lets PUBLIC execute.
        #expect(try grants.decode(Bool.self, at: 0))
        #expect(try grants.decode(Bool.self, at: 1) == false)
        #expect(try grants.decode(Int.self, at: 2) == 0)
    }

    private static func count(_ sql: String, on connection: PostgresConnection) throws -> Int {
        try connection.query(sql, context: "count").single().decode(Int.self, at: 0)
    }
}
