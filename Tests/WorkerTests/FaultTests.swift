import Foundation
import PGQueue
import TestKit
import Testing

/// Faults the worker must survive, each against the real `sluice` binary and a database of the test's own
/// (a cluster of its own where the server restarts), with a 2 s lease. Jobs of kind `sluice.test.mark` write one row per attempt that commits, in
/// the job's transaction, so "exactly one mark per job" proves no job was lost and none applied twice.
@Suite("worker faults", .serialized)
struct FaultTests {
    static func enqueueMarks(_ count: Int, payload: String, maxAttempts: Int = 5, on cluster: some DatabaseUnderTest)
        throws -> [Int64]
    {
        let jobs = (0..<count).map { _ in NewJob(kind: "sluice.test.mark", payload: payload, maxAttempts: maxAttempts) }
        return try JobQueue().enqueue(jobs, on: cluster.connect())
    }

    static func expectEveryJobMarkedOnce(_ ids: [Int64], _ cluster: some DatabaseUnderTest, logs: [SluiceProcess])
        throws
    {
        let marks = try cluster.count("SELECT count(*) FROM sluice_test.marks WHERE job_id = ANY($1::bigint[])", [ids])
        let distinct = try cluster.count(
            "SELECT count(DISTINCT job_id) FROM sluice_test.marks WHERE job_id = ANY($1::bigint[])", [ids])
        let left = try cluster.count("SELECT count(*) FROM sluice.jobs")
        let dead = try cluster.count("SELECT count(*) FROM sluice.dead_letters")
        let context = logs.map(\.log).joined(separator: "\n----\n")
        #expect(distinct == ids.count, "jobs lost:\n\(context)")
        #expect(marks == ids.count, "jobs applied twice:\n\(context)")
        #expect(left == 0)
        #expect(dead == 0)
    }

    @Test("kill -9 in the middle of a batch loses no job: another process rescues and finishes them")
    func killNine() throws {
        let database = try TestDatabase()
        let ids = try Self.enqueueMarks(200, payload: #"{"sleep_ms": 30}"#, on: database)
        let first = try SluiceProcess(databaseURL: database.url, environment: ["SLUICE_CONCURRENCY": "5"])
        #expect(eventually(timeout: 30) { (try? database.count("SELECT count(*) FROM sluice_test.marks")) ?? 0 >= 20 })
        first.signal(SIGKILL)
        _ = first.waitForExit(timeout: 10)
        let running = try database.count("SELECT count(*) FROM sluice.jobs WHERE state = 'running'")
        #expect(running > 0, "the kill should leave leased jobs behind")

        let second = try SluiceProcess(databaseURL: database.url, environment: ["SLUICE_CONCURRENCY": "5"])
        #expect(eventually(timeout: 60) { (try? database.count("SELECT count(*) FROM sluice.jobs")) == 0 })
        try Self.expectEveryJobMarkedOnce(ids, database, logs: [first, second])
        #expect(second.log.contains("Rescued jobs"))
        #expect(try database.count("SELECT count(*) FROM sluice_test.marks WHERE attempt = 2") > 0)
    }

    @Test("a PostgreSQL restart: workers back off, reconnect, LISTEN again and finish every job")
    func serverRestart() throws {
        let cluster = try Cluster()
        let ids = try Self.enqueueMarks(150, payload: #"{"sleep_ms": 20}"#, on: cluster)
        // A 30 s poll: only a re-established LISTEN can pick up the job enqueued after the restart in time.
        let worker = try SluiceProcess(
            databaseURL: cluster.url, environment: ["SLUICE_CONCURRENCY": "4", "SLUICE_POLL_SECONDS": "30"])
        #expect(eventually(timeout: 30) { (try? cluster.count("SELECT count(*) FROM sluice_test.marks")) ?? 0 >= 20 })
        try cluster.restart()
        #expect(eventually(timeout: 60) { (try? cluster.count("SELECT count(*) FROM sluice.jobs")) == 0 })
        #expect(worker.isRunning)
        try Self.expectEveryJobMarkedOnce(ids, cluster, logs: [worker])

        Thread.sleep(forTimeInterval: 1)  // let the listener reconnect after the last claim round
        let late = try Self.enqueueMarks(1, payload: "{}", on: cluster)
        #expect(
            eventually(timeout: 15) { (try? cluster.count("SELECT count(*) FROM sluice.jobs")) == 0 }, "\(worker.log)")
        try Self.expectEveryJobMarkedOnce(ids + late, cluster, logs: [worker])
    }

    @Test("killed backends, the LISTEN one included, are replaced without restarting the worker")
    func killedBackends() throws {
        let database = try TestDatabase()
        let worker = try SluiceProcess(databaseURL: database.url, environment: ["SLUICE_POLL_SECONDS": "30"])
        let first = try Self.enqueueMarks(20, payload: "{}", on: database)
        #expect(eventually(timeout: 20) { (try? database.count("SELECT count(*) FROM sluice.jobs")) == 0 })
        let killed = try database.count(
            """
            SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
            WHERE application_name = 'sluice' AND datname = current_database() AND pid <> pg_backend_pid()
            """)
        #expect(killed >= 3, "fetcher, flusher, maintenance and listener connections")
        Thread.sleep(forTimeInterval: 1.5)
        let second = try Self.enqueueMarks(20, payload: "{}", on: database)
        #expect(
            eventually(timeout: 15) { (try? database.count("SELECT count(*) FROM sluice.jobs")) == 0 }, "\(worker.log)")
        #expect(worker.isRunning)
        try Self.expectEveryJobMarkedOnce(first + second, database, logs: [worker])
    }

    @Test("a poison job that crashes its worker every time ends in dead letters after max_attempts")
    func poisonJob() throws {
        let database = try TestDatabase()
        let id = try JobQueue().enqueue(
            NewJob(kind: "sluice.noop", payload: #"{"crash": true}"#, maxAttempts: 3), on: database.connect())
        var processes: [SluiceProcess] = []
        // Restart the worker each time it dies, as systemd's Restart=on-failure does.
        let deadline = Date(timeIntervalSinceNow: 60)
        while Date() < deadline, try database.count("SELECT count(*) FROM sluice.dead_letters") == 0 {
            if processes.last?.isRunning != true {
                processes.append(try SluiceProcess(databaseURL: database.url))
            }
            Thread.sleep(forTimeInterval: 0.2)
        }
        let dead = try #require(try JobQueue().deadLetter(id: id, on: database.connect()))
        #expect(dead.reason == "lease_expired")
        #expect(dead.attempt == 3)
        #expect(processes.count >= 3, "each attempt crashed a process")
    }

    @Test("a handler that throws is retried after its backoff; a permanent failure goes straight to dead letters")
    func throwingHandlers() throws {
        let database = try TestDatabase()
        let queue = JobQueue()
        let connection = try database.connect()
        let flaky = try queue.enqueue(NewJob(kind: "sluice.noop", payload: #"{"fail_attempts": 1}"#), on: connection)
        let doomed = try queue.enqueue(NewJob(kind: "sluice.noop", payload: #"{"permanent": true}"#), on: connection)
        let unknown = try queue.enqueue(NewJob(kind: "no.such.kind"), on: connection)
        let worker = try SluiceProcess(databaseURL: database.url)
        #expect(
            eventually(timeout: 20) { (try? database.count("SELECT count(*) FROM sluice.jobs")) == 0 }, "\(worker.log)")
        #expect(try queue.deadLetter(id: flaky, on: connection) == nil)
        #expect(try queue.deadLetter(id: doomed, on: connection)?.reason == "permanent_failure")
        let missing = try #require(try queue.deadLetter(id: unknown, on: connection))
        #expect(missing.errors.contains("no handler for kind no.such.kind"))
        #expect(worker.log.contains("Job failed; will retry"))
    }

    @Test("a handler that hangs past its timeout: the job goes to another worker and the late finish is fenced off")
    func hungHandler() throws {
        let database = try TestDatabase()
        try database.connect().query(
            "INSERT INTO sluice.kinds (kind, timeout_seconds) VALUES ('sluice.test.mark', 1)", context: "timeout")
        // The first worker has one slot, which the hung handler keeps: the retry must run elsewhere.
        let hung = try SluiceProcess(databaseURL: database.url, environment: ["SLUICE_CONCURRENCY": "1"])
        let ids = try Self.enqueueMarks(1, payload: #"{"sleep_ms": 6000, "sleep_attempts": 1}"#, on: database)
        #expect(eventually(timeout: 10) { hung.log.contains("Job ran past its timeout") }, "\(hung.log)")
        let other = try SluiceProcess(databaseURL: database.url)
        #expect(eventually(timeout: 20) { (try? database.count("SELECT count(*) FROM sluice.jobs")) == 0 })
        // Let the hung attempt return and try to commit.
        #expect(eventually(timeout: 15) { hung.log.contains("Lease lost while the job ran") }, "\(hung.log)")
        try Self.expectEveryJobMarkedOnce(ids, database, logs: [hung, other])
        #expect(try database.count("SELECT count(*) FROM sluice_test.marks WHERE attempt = 1") == 0)
    }

    @Test("a frozen worker loses its lease to another; when it thaws, its finish is fenced off")
    func frozenWorker() throws {
        let database = try TestDatabase()
        let frozen = try SluiceProcess(databaseURL: database.url)
        let ids = try Self.enqueueMarks(1, payload: #"{"sleep_ms": 1500, "sleep_attempts": 1}"#, on: database)
        #expect(
            eventually(timeout: 10) {
                (try? database.count("SELECT count(*) FROM sluice.jobs WHERE state = 'running'")) == 1
            })
        frozen.signal(SIGSTOP)
        let other = try SluiceProcess(databaseURL: database.url)
        #expect(
            eventually(timeout: 20) { (try? database.count("SELECT count(*) FROM sluice.jobs")) == 0 }, "\(other.log)")
        frozen.signal(SIGCONT)
        #expect(eventually(timeout: 10) { frozen.log.contains("Lease lost while the job ran") }, "\(frozen.log)")
        try Self.expectEveryJobMarkedOnce(ids, database, logs: [frozen, other])
        #expect(try database.count("SELECT attempt FROM sluice_test.marks") == 2)
    }

    @Test("SIGTERM with a job running past the shutdown timeout: its lease is released and another worker takes it")
    func shutdownReleasesLease() throws {
        let database = try TestDatabase()
        let stopping = try SluiceProcess(
            databaseURL: database.url,
            environment: ["SLUICE_SHUTDOWN_SECONDS": "1", "SLUICE_LEASE_SECONDS": "30"])
        let ids = try Self.enqueueMarks(1, payload: #"{"sleep_ms": 4000}"#, on: database)
        #expect(
            eventually(timeout: 10) {
                (try? database.count("SELECT count(*) FROM sluice.jobs WHERE state = 'running'")) == 1
            })
        let signalled = Date()
        stopping.signal(SIGTERM)
        #expect(stopping.waitForExit(timeout: 10) == 0, "\(stopping.log)")
        #expect(Date().timeIntervalSince(signalled) < 5)
        #expect(stopping.log.contains("released.count=1"))
        // Released, not left to expire: the job is available at once with its attempt given back.
        #expect(try database.count("SELECT count(*) FROM sluice.jobs WHERE state = 'available' AND attempt = 0") == 1)
        let other = try SluiceProcess(databaseURL: database.url, environment: ["SLUICE_LEASE_SECONDS": "30"])
        #expect(
            eventually(timeout: 20) { (try? database.count("SELECT count(*) FROM sluice.jobs")) == 0 }, "\(other.log)")
        try Self.expectEveryJobMarkedOnce(ids, database, logs: [stopping, other])
    }
}
