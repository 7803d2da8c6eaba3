import Foundation
import PGQueue
import TestKit
import Testing

/// `sluice.start_exclusive_job_for`: a caller's jobs of some kinds take turns, the last one staying (the app's
/// API starts a user's subscription changes this way).
@Suite("exclusive jobs for a caller")
struct ExclusiveJobTests {
    static let kinds = ["test.change", "test.cancel"]

    static func start(
        _ kind: String, _ payload: String, for caller: String = "user:u1", on connection: PostgresConnection
    ) throws -> JobQueue.ExclusiveStart {
        try JobQueue().startExclusiveJob(
            kind: kind, payload: payload, for: caller, exclusiveWith: kinds, on: connection)
    }

    static func started(_ start: JobQueue.ExclusiveStart) -> Int64? {
        if case .started(let id) = start { id } else { nil }
    }

    /// What `GET /v1/jobs/{id}` shows the caller: state and error.
    static func view(_ id: Int64, on connection: PostgresConnection) throws -> String? {
        try connection.firstValue(
            "SELECT concat_ws(' ', j ->> 'state', j ->> 'error') FROM sluice.job_for(\(id), 'user:u1') j")
    }

    /// Starts `kind` for user:u1 on a thread of its own while `holder`'s open transaction holds a lock the
    /// start needs; sees the start wait for it (a lock of `lockType` not granted, blocked by `holder`), then
    /// commits that transaction and returns whether the start waited and what it did.
    static func startBehind(
        _ holder: PostgresConnection, lockType: String, kind: String, database: TestDatabase
    ) throws -> (waited: Bool, outcome: JobQueue.ExclusiveStart?) {
        let outcome = Box<JobQueue.ExclusiveStart?>(nil)
        let done = DispatchSemaphore(value: 0)
        Thread {
            let result = try? start(kind, "{}", on: database.connect())
            outcome.value.withLock { $0 = result }
            done.signal()
        }.start()
        let waited = try eventually {
            try holder.firstValue(
                """
                SELECT count(*) FROM pg_locks l
                WHERE l.locktype = '\(lockType)' AND NOT l.granted AND pg_backend_pid() = ANY (pg_blocking_pids(l.pid))
                """) == "1"
        }
        try holder.query("COMMIT", context: "committing the transaction the start waits for")
        done.wait()
        return (waited, outcome.value.withLock { $0 })
    }

    @Test("the same request again follows the pending job; another waits while one runs and replaces one that waits")
    func takeTurns() throws {
        let database = try TestDatabase()
        let connection = try database.connect()
        let queue = JobQueue()
        let first = try #require(Self.started(try Self.start("test.change", #"{"price": "pro"}"#, on: connection)))
        #expect(try Self.start("test.change", #"{"price": "pro"}"#, on: connection) == .alreadyPending(first))
        // Running: a different change is held back, the same one still follows it.
        let claimed = try queue.claim(from: "default", limit: 10, on: connection)
        #expect(claimed.map(\.id) == [first])
        #expect(try Self.start("test.cancel", "{}", on: connection) == .blocked(by: first, kind: "test.change"))
        #expect(
            try Self.start("test.change", #"{"price": "basic"}"#, on: connection)
                == .blocked(by: first, kind: "test.change"))
        #expect(try Self.start("test.change", #"{"price": "pro"}"#, on: connection) == .alreadyPending(first))
        // Another caller is not held back.
        #expect(Self.started(try Self.start("test.cancel", "{}", for: "user:u2", on: connection)) != nil)
        // Over: the next one starts, and a later one replaces it while it waits.
        _ = try queue.complete(claimed.map(\.lease), on: connection)
        let cancel = try #require(Self.started(try Self.start("test.cancel", "{}", on: connection)))
        let change = try #require(Self.started(try Self.start("test.change", #"{"price": "basic"}"#, on: connection)))
        #expect(try connection.firstValue("SELECT count(*) FROM sluice.jobs WHERE id = \(cancel)") == "0")
        #expect(
            try Self.view(cancel, on: connection)
                == "failed superseded by job \(change), a later change by the same user, before it ran")
        #expect(try Self.view(change, on: connection) == "queued")
        // Replaced it stays, whatever a late attempt stores; and it has no result to read.
        try connection.query(
            "SELECT sluice.record_job_result($1, 'test.cancel', '{\"done\": true}'::jsonb)", [cancel],
            context: "a late result")
        #expect(try Self.view(cancel, on: connection)?.hasPrefix("failed superseded") == true)
        #expect(try connection.firstValue("SELECT sluice.job_result(\(cancel))") == nil)
        // A kind outside the set is refused rather than started beside the pending one unchecked.
        let outside = try #require(throws: PostgresError.self) { try Self.start("test.other", "{}", on: connection) }
        #expect(outside.sqlState == "22023" && outside.message.contains("not among the exclusive kinds"))
    }

    @Test("a job that finished, stored its result or died is not pending; one retrying is replaced")
    func finishedIsNotPending() throws {
        let database = try TestDatabase()
        let connection = try database.connect()
        let queue = JobQueue()
        let first = try #require(Self.started(try Self.start("test.change", "{}", on: connection)))
        // Its result stored (the handler's own transaction), its row not yet deleted by the worker's batch.
        let running = try queue.claim(from: "default", limit: 10, on: connection)
        #expect(running.map(\.id) == [first])
        try connection.query(
            "SELECT sluice.record_job_result($1, 'test.change', '{}'::jsonb)", [first], context: "storing a result")
        let second = try #require(Self.started(try Self.start("test.change", "{}", on: connection)))
        #expect(try Self.view(first, on: connection) == "succeeded")
        // Failed and waiting to retry: the same request follows it, another replaces it.
        let retrying = try queue.claim(from: "default", limit: 10, on: connection).filter { $0.id == second }
        _ = try queue.fail(
            retrying.map { JobFailure(lease: $0.lease, kind: .error, message: "timeout", retryIn: 3600) },
            on: connection)
        #expect(try Self.start("test.change", "{}", on: connection) == .alreadyPending(second))
        let third = try #require(Self.started(try Self.start("test.cancel", "{}", on: connection)))
        #expect(try Self.view(second, on: connection)?.hasPrefix("failed superseded by job \(third)") == true)
        // Died: moved to the dead letters.
        let dying = try queue.claim(from: "default", limit: 10, on: connection).filter { $0.id == third }
        _ = try queue.fail(
            dying.map { JobFailure(lease: $0.lease, kind: .permanent, message: "refused", retryIn: 1) },
            on: connection)
        #expect(try connection.firstValue("SELECT count(*) FROM sluice.dead_letters WHERE id = \(third)") == "1")
        #expect(Self.started(try Self.start("test.cancel", "{}", on: connection)) != nil)
    }

    @Test("an attempt that timed out or lost its lease may still be at Stripe: for ten minutes it counts as running")
    func timedOutCountsAsRunning() throws {
        let database = try TestDatabase()
        let connection = try database.connect()
        let queue = JobQueue()
        let first = try #require(Self.started(try Self.start("test.change", "{}", on: connection)))
        let claimed = try queue.claim(from: "default", limit: 10, on: connection)
        _ = try queue.fail(
            claimed.map { JobFailure(lease: $0.lease, kind: .timeout, message: "ran past 300 s", retryIn: 3600) },
            on: connection)
        #expect(try Self.start("test.cancel", "{}", on: connection) == .blocked(by: first, kind: "test.change"))
        // Ten minutes on, its handler has long returned: the job is replaced.
        try connection.query(
            "UPDATE sluice.jobs SET errors = jsonb_set(errors, '{-1,at}', to_jsonb(now() - interval '11 minutes')) "
                + "WHERE id = $1", [first], context: "eleven minutes ago")
        #expect(Self.started(try Self.start("test.cancel", "{}", on: connection)) != nil)
    }

    @Test("a claim in progress is waited for: the start then sees the job running and replaces nothing")
    func claimInProgress() throws {
        let database = try TestDatabase()
        let claimer = try database.connect()
        let first = try #require(Self.started(try Self.start("test.change", "{}", on: claimer)))
        try claimer.query("BEGIN", context: "opening a transaction")
        #expect(try JobQueue().claim(from: "default", limit: 10, on: claimer).map(\.id) == [first])
        // The start waits for the claim's row lock, then sees the job running.
        let (waited, outcome) = try Self.startBehind(
            claimer, lockType: "transactionid", kind: "test.cancel", database: database)
        #expect(waited)
        #expect(outcome == .blocked(by: first, kind: "test.change"))
        #expect(try claimer.firstValue("SELECT state FROM sluice.jobs WHERE id = \(first)") == "running")
    }

    @Test("a start waits for a concurrent one of the same caller to commit, then sees its job: never two at once")
    func concurrentStartsTakeTurns() throws {
        let database = try TestDatabase()
        let holder = try database.connect()
        try holder.query("BEGIN", context: "opening a transaction")
        let first = try #require(Self.started(try Self.start("test.change", #"{"price": "pro"}"#, on: holder)))
        // The racer waits on the caller's lock while the first start is uncommitted.
        let (waited, outcome) = try Self.startBehind(
            holder, lockType: "advisory", kind: "test.cancel", database: database)
        #expect(waited)
        // It saw the first change waiting, and replaced it: one change left, not two.
        let second = try #require(outcome.flatMap(Self.started))
        #expect(try holder.firstValue("SELECT string_agg(id::text, ',') FROM sluice.jobs") == "\(second)")
        #expect(try Self.view(first, on: holder)?.hasPrefix("failed superseded by job \(second)") == true)
    }
}
