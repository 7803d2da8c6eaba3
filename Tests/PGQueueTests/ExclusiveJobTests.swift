import Foundation
import PGQueue
import TestKit
import Testing

/// `sluice.start_exclusive_job_for`: a caller's jobs of some kinds take turns (the app's API starts a user's
/// subscription changes this way).
@Suite("exclusive jobs for a caller")
struct ExclusiveJobTests {
    static let kinds = ["test.change", "test.cancel"]

    static func start(
        _ kind: String, _ payload: String, for caller: String = "user:u1", on connection: PostgresConnection
    ) throws -> JobQueue.ExclusiveStart {
        try JobQueue().startExclusiveJob(
            kind: kind, payload: payload, for: caller, exclusiveWith: kinds, on: connection)
    }

    @Test("while one is pending another is blocked by it, the same request again is that job, other callers go on")
    func takeTurns() throws {
        let database = try TestDatabase()
        let connection = try database.connect()
        guard case .started(let first) = try Self.start("test.change", #"{"price": "pro"}"#, on: connection) else {
            Issue.record("the first change did not start")
            return
        }
        #expect(try Self.start("test.change", #"{"price": "pro"}"#, on: connection) == .alreadyPending(first))
        #expect(
            try Self.start("test.change", #"{"price": "basic"}"#, on: connection)
                == .blocked(by: first, kind: "test.change"))
        #expect(try Self.start("test.cancel", "{}", on: connection) == .blocked(by: first, kind: "test.change"))
        guard case .started = try Self.start("test.cancel", "{}", for: "user:u2", on: connection) else {
            Issue.record("another caller was held back")
            return
        }
        // A kind outside the set is refused rather than started beside the pending one unchecked.
        let outside = try #require(throws: PostgresError.self) {
            try Self.start("test.other", "{}", on: connection)
        }
        #expect(outside.sqlState == "22023" && outside.message.contains("not among the exclusive kinds"))
        #expect(try connection.firstValue("SELECT count(*) FROM sluice.jobs") == "2")
    }

    @Test("a job that finished, stored its result or died is no longer pending")
    func finishedIsNotPending() throws {
        let database = try TestDatabase()
        let connection = try database.connect()
        let queue = JobQueue()
        guard case .started(let first) = try Self.start("test.change", "{}", on: connection) else {
            Issue.record("the first change did not start")
            return
        }
        // Completed: its row is gone.
        let claimed = try queue.claim(from: "default", limit: 10, on: connection)
        #expect(claimed.map(\.id) == [first])
        _ = try queue.complete(claimed.map(\.lease), on: connection)
        guard case .started(let second) = try Self.start("test.change", "{}", on: connection) else {
            Issue.record("a completed job still held the caller back")
            return
        }
        // Its result stored (the handler's own transaction), its row not yet deleted by the worker's batch.
        try connection.query(
            "SELECT sluice.record_job_result($1, 'test.change', '{}'::jsonb)", [second], context: "storing a result")
        guard case .started(let third) = try Self.start("test.change", "{}", on: connection) else {
            Issue.record("a job with its result stored still held the caller back")
            return
        }
        // Failed and waiting to retry: still pending.
        var claimedThird = try queue.claim(from: "default", limit: 10, on: connection).filter { $0.id == third }
        _ = try queue.fail(
            claimedThird.map { JobFailure(lease: $0.lease, kind: .error, message: "timeout", retryIn: 60) },
            on: connection)
        #expect(try Self.start("test.change", "{}", on: connection) == .alreadyPending(third))
        // Died: moved to the dead letters.
        try connection.query("UPDATE sluice.jobs SET run_at = now() WHERE id = $1", [third], context: "due now")
        claimedThird = try queue.claim(from: "default", limit: 10, on: connection).filter { $0.id == third }
        _ = try queue.fail(
            claimedThird.map { JobFailure(lease: $0.lease, kind: .permanent, message: "refused", retryIn: 1) },
            on: connection)
        #expect(try connection.firstValue("SELECT count(*) FROM sluice.dead_letters WHERE id = \(third)") == "1")
        guard case .started = try Self.start("test.change", "{}", on: connection) else {
            Issue.record("a dead job still held the caller back")
            return
        }
    }

    @Test("a start waits for a concurrent one of the same caller to commit, then sees its job: never two at once")
    func concurrentStartsTakeTurns() throws {
        let database = try TestDatabase()
        let holder = try database.connect()
        try holder.query("BEGIN", context: "opening a transaction")
        guard case .started(let first) = try Self.start("test.change", #"{"price": "pro"}"#, on: holder) else {
            Issue.record("the first change did not start")
            return
        }
        let outcome = Box<JobQueue.ExclusiveStart?>(nil)
        let done = DispatchSemaphore(value: 0)
        Thread {
            let result = try? Self.start("test.cancel", "{}", on: database.connect())
            outcome.value.withLock { $0 = result }
            done.signal()
        }.start()
        // The racer waits on the caller's lock while the first start is uncommitted.
        let waiting = try eventually {
            try holder.firstValue("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted") == "1"
        }
        #expect(waiting)
        try holder.query("COMMIT", context: "committing the first start")
        done.wait()
        #expect(outcome.value.withLock { $0 } == .blocked(by: first, kind: "test.change"))
        #expect(try holder.firstValue("SELECT count(*) FROM sluice.jobs") == "1")
    }
}
