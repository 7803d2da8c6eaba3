import Foundation
import Jobs
import PGQueue
import TestKit
import Testing

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// Upgrades and rolling deploys from the operator's side: the real binary against a real database.
@Suite("schema lifecycle", .serialized)
struct SchemaLifecycleTests {
    @Test("the embedded schema is schema.sql")
    func embeddedMatchesFile() throws {
        let file = try String(
            contentsOf: Repository.url("schema.sql"), encoding: .utf8)
        #expect(SluiceSchema.script.sql == file)
    }

    @Test(
        "a rolling deploy: a newer schema that still serves this release keeps it claiming; one that does not stops it, once, with /readyz naming both versions"
    )
    func rollingDeploy() async throws {
        let database = try TestDatabase()
        let build = SluiceSchema.version
        let worker = try SluiceProcess(databaseURL: database.url, environment: ["SLUICE_ADMIN_LISTEN": "127.0.0.1:0"])
        let port = try #require(
            eventually(timeout: 20) { worker.listeningPort("Admin server") != nil }
                ? worker.listeningPort("Admin server") : nil, "\(worker.log)")
        let queue = JobQueue()

        // The next release migrated: one version ahead, still serving this one.
        try database.connect().query(
            "UPDATE sluice.schema_version SET version = $1, serves_from = $2", [build + 1, build], context: "newer")
        _ = try queue.enqueue(NewJob(kind: "sluice.noop"), on: database.connect())
        #expect(
            eventually(timeout: 15) { (try? database.count("SELECT count(*) FROM sluice.jobs")) == 0 }, "\(worker.log)")
        let served = try await ServiceTests.get("http://127.0.0.1:\(port)/readyz")
        #expect(served.status == 200, "\(served.body)")
        #expect(served.body.contains("still serves"), "\(served.body)")

        // A later release removed what this one uses: it stops claiming, says so once, and is not ready.
        try database.connect().query(
            "UPDATE sluice.schema_version SET version = $1, serves_from = $1", [build + 1],
            context: "newer, not serving")
        #expect(eventually(timeout: 15) { worker.log.contains("Schema does not serve this release") }, "\(worker.log)")
        let id = try queue.enqueue(NewJob(kind: "sluice.noop"), on: database.connect())
        try await Task.sleep(for: .seconds(3))
        #expect(try database.count("SELECT count(*) FROM sluice.jobs WHERE id = $1 AND attempt = 0", [id]) == 1)
        let stale = try await ServiceTests.get("http://127.0.0.1:\(port)/readyz")
        #expect(stale.status == 503)
        #expect(stale.body.contains("version \(build + 1)") && stale.body.contains("\(build)"), "\(stale.body)")
        #expect(worker.log.components(separatedBy: "Schema does not serve this release").count == 2, "\(worker.log)")

        // Back to a schema that serves it: it claims again.
        try database.connect().query(
            "UPDATE sluice.schema_version SET version = $1, serves_from = $2", [build, build - 1], context: "current")
        #expect(
            eventually(timeout: 15) { (try? database.count("SELECT count(*) FROM sluice.jobs")) == 0 }, "\(worker.log)")
        #expect(worker.log.contains("Schema serves this release again"))
        worker.signal(SIGTERM)
        #expect(worker.waitForExit(timeout: 10) == 0)
    }

    @Test("sluice migrate --check exits 1 while an upgrade is due and 0 once current; --dry-run applies nothing")
    func migrateCommand() throws {
        let database = try TestDatabase()
        let connection = try database.connect()
        try connection.run(script: "DROP SCHEMA sluice CASCADE; DROP SCHEMA billing CASCADE", context: "start empty")
        let past = Repository.url("Tests/Fixtures/schemas/13-v2-835d844.sql")
        try connection.run(script: String(contentsOf: past, encoding: .utf8), context: "a version 2 database")

        let check = try SluiceProcess(["migrate", "--check"], databaseURL: database.url)
        #expect(check.waitForExit(timeout: 30) == 1, "\(check.log)")
        #expect(
            check.log.contains("database: version 2; this release: version \(SluiceSchema.version)"), "\(check.log)")

        let dryRun = try SluiceProcess(["migrate", "--dry-run"], databaseURL: database.url)
        #expect(dryRun.waitForExit(timeout: 30) == 0, "\(dryRun.log)")
        #expect(dryRun.log.contains("add column sluice.schema_version.serves_from integer"), "\(dryRun.log)")
        #expect(try InstalledSchema.read(on: connection)?.version == 2)

        let migrate = try SluiceProcess(["migrate"], databaseURL: database.url)
        #expect(migrate.waitForExit(timeout: 30) == 0, "\(migrate.log)")
        #expect(migrate.log.contains("schema upgraded from version 2 to \(SluiceSchema.version)"), "\(migrate.log)")

        let again = try SluiceProcess(["migrate", "--check"], databaseURL: database.url)
        #expect(again.waitForExit(timeout: 30) == 0, "\(again.log)")
    }

    @Test("housekeeping prunes expired rows in batches while workers keep completing jobs, and counts them")
    func pruning() async throws {
        let database = try TestDatabase()
        let connection = try database.connect()
        try connection.run(
            script: """
                INSERT INTO sluice.dead_letters (id, queue, kind, payload, attempt, max_attempts, reason, created_at, died_at)
                SELECT -g, 'default', 'old', '{}', 1, 1, 'permanent_failure', now() - interval '40 days', now() - interval '40 days'
                FROM generate_series(1, 2500) g;
                INSERT INTO sluice.dead_letters (id, queue, kind, payload, attempt, max_attempts, reason, created_at)
                VALUES (-9999, 'default', 'recent', '{}', 1, 1, 'permanent_failure', now());
                INSERT INTO billing.processed_events (source, event_id, type, outcome, processed_at)
                SELECT 'stripe', 'evt_old_' || g, 'x', 'ignored', now() - interval '90 days' FROM generate_series(1, 2500) g;
                INSERT INTO billing.processed_events (source, event_id, type, outcome) VALUES ('stripe', 'evt_new', 'x', 'ignored');
                INSERT INTO billing.audit_log (at, source, event_id, event_type, entity, entity_id, action)
                VALUES (now() - interval '10 years', 'stripe', 'evt_x', 'x', 'users', 'u', 'created');
                """, context: "seeding expired rows")
        let queue = JobQueue()
        _ = try queue.enqueue((0..<200).map { _ in NewJob(kind: "sluice.noop") }, on: connection)
        let worker = try SluiceProcess(
            databaseURL: database.url, environment: ["SLUICE_ADMIN_LISTEN": "127.0.0.1:0"])
        #expect(
            eventually(timeout: 30) {
                (try? database.count("SELECT count(*) FROM sluice.dead_letters")) == 1
                    && (try? database.count("SELECT count(*) FROM billing.processed_events")) == 1
            }, "\(worker.log)")
        #expect(
            eventually(timeout: 15) { (try? database.count("SELECT count(*) FROM sluice.jobs")) == 0 }, "\(worker.log)")
        // The audit log is kept by default.
        #expect(try database.count("SELECT count(*) FROM billing.audit_log") == 1)
        #expect(
            worker.log.contains("sluice.dead_letters.pruned=2500") || worker.log.contains("sluice.dead_letters.pruned"),
            "\(worker.log)")
        let port = try #require(worker.listeningPort("Admin server"))
        let metrics = try await ServiceTests.get("http://127.0.0.1:\(port)/metrics")
        #expect(
            metrics.body.contains(#"sluice_pruned_rows_total{table="sluice.dead_letters"} 2500"#), "\(metrics.body)")
        #expect(metrics.body.contains(#"sluice_pruned_rows_total{table="billing.processed_events"} 2500"#))
        worker.signal(SIGTERM)
        #expect(worker.waitForExit(timeout: 10) == 0)
    }
}

@Suite("backup and restore", .serialized)
struct BackupRestoreTests {
    @Test(
        "a dump taken while workers run restores into a new database where every job in it has its effect exactly once")
    func dumpWhileRunningRestoresExactlyOnce() throws {
        let cluster = try Cluster()
        let connection = try cluster.connect()
        let queue = JobQueue()
        let ids = try queue.enqueue(
            (0..<3000).map { _ in NewJob(kind: "sluice.test.mark", payload: #"{"sleep_ms": 2}"#) }, on: connection)
        let worker = try SluiceProcess(databaseURL: cluster.url, environment: ["SLUICE_CONCURRENCY": "4"])
        #expect(eventually(timeout: 30) { ((try? cluster.count("SELECT count(*) FROM sluice_test.marks")) ?? 0) > 300 })

        // A backup in the middle of the run, as an operator takes it: pg_dump of both schemas (and the
        // test's marks, which stand for the billing model here).
        let dump = NSTemporaryDirectory() + "sluice-backup-\(UInt32.random(in: 0...UInt32.max)).dump"
        defer { try? FileManager.default.removeItem(atPath: dump) }
        #expect(
            try Self.tool([
                "pg_dump", "--format=custom", "--file=\(dump)", "--schema=sluice", "--schema=billing",
                "--schema=sluice_test", cluster.url,
            ]) == 0)
        worker.signal(SIGTERM)
        #expect(worker.waitForExit(timeout: 15) == 0)

        // Restore into a new database, start workers there, let them drain it.
        try connection.run(script: "CREATE DATABASE restored", context: "a database to restore into")
        #expect(cluster.url.hasSuffix("/postgres"))
        let restoredURL = String(cluster.url.dropLast("postgres".count)) + "restored"
        #expect(try Self.tool(["pg_restore", "--no-owner", "--dbname=\(restoredURL)", dump]) == 0)
        let restoredConnection = try PostgresConnection(connectionString: restoredURL)
        func count(_ sql: String) throws -> Int {
            try restoredConnection.query(sql, context: "count").single().decode(Int.self, at: 0)
        }
        #expect(try count("SELECT count(*) FROM sluice.jobs") > 0, "the dump should catch the queue mid-run")
        #expect(try count("SELECT count(*) FROM sluice_test.marks") > 0)
        let restored = try SluiceProcess(databaseURL: restoredURL, environment: ["SLUICE_CONCURRENCY": "4"])
        #expect(eventually(timeout: 60) { (try? count("SELECT count(*) FROM sluice.jobs")) == 0 }, "\(restored.log)")
        // Every job of the dump ran exactly once in all: before the dump (its mark is in the dump) or after
        // the restore, never both, and none is lost, including those that were running when the dump began.
        #expect(try count("SELECT count(DISTINCT job_id) FROM sluice_test.marks") == ids.count)
        #expect(try count("SELECT count(*) FROM sluice_test.marks") == ids.count)
        #expect(try count("SELECT count(*) FROM sluice.dead_letters") == 0)
        restored.signal(SIGTERM)
        #expect(restored.waitForExit(timeout: 15) == 0)
    }

    @Test("an erasure made after a backup is applied again after restoring it, from the exported list")
    func erasuresSurviveARestore() throws {
        let cluster = try Cluster()
        let connection = try cluster.connect()
        let created =
            #"{"type": "user.created", "timestamp": 1700000000000, "data": {"id": "user_gone", "#
            + #""first_name": "Ada", "last_name": "Lovelace", "updated_at": 1700000000000, "#
            + #""primary_email_address_id": "e1", "email_addresses": [{"id": "e1", "email_address": "ada@example.com"}]}}"#
        try connection.query("SELECT billing.apply_clerk_event($1::jsonb, 'msg_created')", [created], context: "create")
        let dump = NSTemporaryDirectory() + "sluice-backup-\(UInt32.random(in: 0...UInt32.max)).dump"
        defer { try? FileManager.default.removeItem(atPath: dump) }
        #expect(try Self.tool(["pg_dump", "--format=custom", "--file=\(dump)", cluster.url]) == 0)

        // After the backup, Clerk deletes the user; the list is exported, and the database is lost.
        let deleted =
            #"{"type": "user.deleted", "timestamp": 1700000500000, "data": {"id": "user_gone", "deleted": true}}"#
        try connection.query("SELECT billing.apply_clerk_event($1::jsonb, 'msg_deleted')", [deleted], context: "delete")
        let export = try SluiceProcess(["erasures", "export"], databaseURL: cluster.url)
        #expect(export.waitForExit(timeout: 30) == 0, "\(export.log)")
        #expect(export.log == "user_gone 1700000500000\n", "\(export.log)")
        let list = NSTemporaryDirectory() + "sluice-erasures-\(UInt32.random(in: 0...UInt32.max)).txt"
        defer { try? FileManager.default.removeItem(atPath: list) }
        try export.log.write(toFile: list, atomically: true, encoding: .utf8)

        try connection.run(script: "CREATE DATABASE restored", context: "a database to restore into")
        let restoredURL = String(cluster.url.dropLast("postgres".count)) + "restored"
        #expect(try Self.tool(["pg_restore", "--no-owner", "--dbname=\(restoredURL)", dump]) == 0)
        let restored = try PostgresConnection(connectionString: restoredURL)
        func personalData() throws -> Int {
            try restored.query(
                """
                SELECT (SELECT count(*) FROM billing.users WHERE email IS NOT NULL OR first_name IS NOT NULL)
                     + (SELECT count(*) FROM billing.audit_log WHERE after ? 'email' OR before ? 'email')
                """, context: "personal data"
            ).single().decode(Int.self, at: 0)
        }
        #expect(try personalData() > 0, "the restored backup holds the data the erasure removed")

        let apply = try SluiceProcess(["erasures", "apply", list], databaseURL: restoredURL)
        #expect(apply.waitForExit(timeout: 30) == 0, "\(apply.log)")
        #expect(apply.log.contains("1 erasures read; 1 applied now"), "\(apply.log)")
        #expect(try personalData() == 0)
        // A redelivered older event cannot bring the data back, and applying the list again changes nothing.
        let updated = created.replacingOccurrences(of: #""type": "user.created""#, with: #""type": "user.updated""#)
        try restored.query("SELECT billing.apply_clerk_event($1::jsonb, 'msg_late')", [updated], context: "late")
        #expect(try personalData() == 0)
        let again = try SluiceProcess(["erasures", "apply", list], databaseURL: restoredURL)
        #expect(again.waitForExit(timeout: 30) == 0)
        #expect(again.log.contains("0 applied now, 1 already applied"), "\(again.log)")
    }

    private static func tool(_ arguments: [String]) throws -> Int32 {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = arguments
        try process.run()
        process.waitUntilExit()
        return process.terminationStatus
    }
}

@Suite("erasure lists")
struct ErasureListTests {
    @Test("the list reads its own lines and sluice's journal lines, skips the rest, and names a bad line")
    func parsing() throws {
        let text = """
            # exported 2026-12-02
            user_a 1700000000000
            2026-12-02T10:00:00Z info User erased job.id=7 user.id=user_b erasure.version=1700000000001
            2026-12-02T10:00:01Z info Billing event processed event.outcome=applied

            """
        #expect(
            try ErasureList.parse(text) == [
                ErasureList.Entry(userID: "user_a", version: 1_700_000_000_000),
                ErasureList.Entry(userID: "user_b", version: 1_700_000_000_001),
            ])
        let error = try #require(throws: ErasureListError.self) { try ErasureList.parse("user_a\nuser_b soon\n") }
        #expect(error.line == 2)
        #expect(ErasureList.render(try ErasureList.parse("user_a 5")) == "user_a 5\n")
    }
}
