import Foundation
import PGQueue
import TestKit
import Testing

@Suite("failures, retries and dead letters")
struct QueueFailureTests {
    @Test("backoff doubles from the base, stops at the cap, and jitters within [delay/2, delay]")
    func backoffBounds() {
        let backoff = Backoff.standard
        #expect(backoff.ceiling(afterAttempt: 1) == 2)
        #expect(backoff.ceiling(afterAttempt: 2) == 4)
        #expect(backoff.ceiling(afterAttempt: 5) == 32)
        #expect(backoff.ceiling(afterAttempt: 12) == 3600)
        #expect(backoff.ceiling(afterAttempt: 10_000) == 3600)
        var generator = SystemRandomNumberGenerator()
        for attempt in 1...30 {
            let ceiling = backoff.ceiling(afterAttempt: attempt)
            for _ in 0..<50 {
                let delay = backoff.delay(afterAttempt: attempt, using: &generator)
                #expect(delay >= ceiling / 2 && delay <= ceiling)
            }
        }
    }

    @Test("a failed attempt goes back with its backoff and an error entry")
    func retryAfterFailure() throws {
        let database = try TestDatabase()
        let connection = try database.connect()
        let queue = JobQueue()
        let id = try queue.enqueue(NewJob(kind: "k", maxAttempts: 5), on: connection)
        let job = try #require(try queue.claim(from: "default", limit: 1, on: connection).first)
        let outcome = try queue.fail(
            [JobFailure(lease: job.lease, kind: .error, message: "boom", retryIn: 120)], on: connection)
        #expect(outcome == [FailureOutcome(id: id, result: .retried)])
        let row = try connection.query(
            """
            SELECT state, attempt, locked_by IS NULL, extract(epoch FROM run_at - now())::float8,
                   errors -> 0 ->> 'error', (errors -> 0 ->> 'attempt')::int, jsonb_array_length(errors)
            FROM sluice.jobs WHERE id = $1
            """, [id], context: "read"
        ).single()
        #expect(try row.decode(String.self, at: 0) == "available")
        #expect(try row.decode(Int.self, at: 1) == 1)
        #expect(try row.decode(Bool.self, at: 2))
        let wait = try row.decode(Double.self, at: 3)
        #expect(wait > 110 && wait <= 120)
        #expect(try row.decode(String.self, at: 4) == "boom")
        #expect(try row.decode(Int.self, at: 5) == 1)
        #expect(try row.decode(Int.self, at: 6) == 1)
        // Not due yet, so not claimable.
        #expect(try queue.claim(from: "default", limit: 1, on: connection).isEmpty)
    }

    @Test("the last allowed attempt's failure moves the job to dead letters with every error kept")
    func deadAfterMaxAttempts() throws {
        let database = try TestDatabase()
        let connection = try database.connect()
        let queue = JobQueue()
        let id = try queue.enqueue(NewJob(kind: "k", payload: "{\"a\": 1}", maxAttempts: 3), on: connection)
        for attempt in 1...3 {
            let job = try #require(try queue.claim(from: "default", limit: 1, on: connection).first)
            #expect(job.attempt == attempt)
            let outcome = try queue.fail(
                [JobFailure(lease: job.lease, kind: .error, message: "failure \(attempt)", retryIn: 0)], on: connection)
            #expect(outcome.first?.result == (attempt < 3 ? .retried : .dead))
        }
        #expect(try queue.claim(from: "default", limit: 1, on: connection).isEmpty)
        let dead = try #require(try queue.deadLetter(id: id, on: connection))
        #expect(dead.reason == "attempts_exhausted")
        #expect(dead.attempt == 3)
        #expect(dead.payload == "{\"a\": 1}")
        let messages = try connection.query(
            "SELECT e ->> 'error' FROM sluice.dead_letters, jsonb_array_elements(errors) AS e WHERE id = $1",
            [id], context: "errors"
        ).map { try $0.decode(String.self, at: 0) }
        #expect(messages == ["failure 1", "failure 2", "failure 3"])
        let summary = try connection.query(
            "SELECT dead, latest_error FROM sluice.dead_letter_summary WHERE kind = 'k'", context: "summary"
        ).single()
        #expect(try summary.decode(Int.self, at: 0) == 1)
        #expect(try summary.decode(String.self, at: 1) == "failure 3")
    }

    @Test("a permanent failure goes straight to dead letters and frees the unique key")
    func permanentFailure() throws {
        let database = try TestDatabase()
        let connection = try database.connect()
        let queue = JobQueue()
        let id = try queue.enqueue(NewJob(kind: "k", uniqueKey: "evt_1"), on: connection)
        let job = try #require(try queue.claim(from: "default", limit: 1, on: connection).first)
        #expect(job.maxAttempts == 20)
        let outcome = try queue.fail(
            [JobFailure(lease: job.lease, kind: .permanent, message: "payload unreadable", retryIn: 0)], on: connection)
        #expect(outcome == [FailureOutcome(id: id, result: .dead)])
        #expect(try queue.deadLetter(id: id, on: connection)?.reason == "permanent_failure")
        #expect(try queue.enqueue(NewJob(kind: "k", uniqueKey: "evt_1"), on: connection) != id)
    }

    @Test("operators retry and discard dead letters from SQL")
    func retryAndDiscardFromSQL() throws {
        let database = try TestDatabase()
        let connection = try database.connect()
        let queue = JobQueue()
        var ids: [Int64] = []
        for n in 0..<3 {
            let id = try queue.enqueue(NewJob(kind: n < 2 ? "mail" : "other", maxAttempts: 1), on: connection)
            let job = try #require(try queue.claim(from: "default", limit: 1, on: connection).first)
            _ = try queue.fail([JobFailure(lease: job.lease, kind: .error, message: "x", retryIn: 0)], on: connection)
            ids.append(id)
        }
        let back = try connection.query("SELECT sluice.retry_dead($1)", [ids[0]], context: "retry").single()
        #expect(try back.decode(Int64.self, at: 0) == ids[0])
        let retried = try #require(try queue.claim(from: "default", limit: 1, on: connection).first)
        #expect(retried.id == ids[0])
        #expect(retried.attempt == 1)
        #expect(try queue.deadLetter(id: ids[0], on: connection) == nil)

        let discarded = try connection.query("SELECT sluice.discard_dead($1)", [ids[1]], context: "discard").single()
        #expect(try discarded.decode(Bool.self, at: 0))
        #expect(try queue.deadLetter(id: ids[1], on: connection) == nil)

        let count = try connection.query("SELECT sluice.retry_dead_kind('other')", context: "retry kind").single()
        #expect(try count.decode(Int.self, at: 0) == 1)

        let missing = try #require(throws: PostgresError.self) {
            try connection.query("SELECT sluice.retry_dead(424242)", context: "retry missing")
        }
        #expect(missing.sqlState == "P0002")
        #expect(missing.message.contains("424242"))
    }

    @Test("retry_dead is refused while another job holds the dead letter's unique key")
    func retryDeadRefusedWhenKeyHeld() throws {
        let database = try TestDatabase()
        let connection = try database.connect()
        let queue = JobQueue()
        let first = try queue.enqueue(NewJob(kind: "k", maxAttempts: 1, uniqueKey: "evt"), on: connection)
        let job = try #require(try queue.claim(from: "default", limit: 1, on: connection).first)
        _ = try queue.fail([JobFailure(lease: job.lease, kind: .error, message: "x", retryIn: 0)], on: connection)
        let second = try queue.enqueue(NewJob(kind: "k", uniqueKey: "evt"), on: connection)
        #expect(second != first)
        let error = try #require(throws: PostgresError.self) { try queue.retryDead(id: first, on: connection) }
        #expect(error.sqlState == "23505")
        #expect(error.message.contains("job \(second) holds unique key evt"))
        #expect(try queue.deadLetter(id: first, on: connection) != nil)
    }
}

@Suite("housekeeping")
struct HousekeepingTests {
    @Test("long error histories are trimmed to their last entries")
    func trimErrorHistory() throws {
        let database = try TestDatabase()
        let connection = try database.connect()
        let queue = JobQueue()
        let id = try queue.enqueue(NewJob(kind: "k", maxAttempts: 50), on: connection)
        for attempt in 1...6 {
            let job = try #require(try queue.claim(from: "default", limit: 1, on: connection).first)
            try queue.fail(
                [JobFailure(lease: job.lease, kind: .error, message: "failure \(attempt)", retryIn: 0)], on: connection)
        }
        #expect(try queue.trimErrorHistory(keep: 2, on: connection) == 1)
        let kept = try connection.query(
            "SELECT e ->> 'error' FROM sluice.jobs, jsonb_array_elements(errors) AS e WHERE id = $1", [id],
            context: "read"
        ).map { try $0.decode(String.self, at: 0) }
        #expect(kept == ["failure 5", "failure 6"])
        #expect(try queue.trimErrorHistory(keep: 2, on: connection) == 0)
    }

    @Test("dead letters older than the retention are pruned in batches; newer ones stay")
    func pruneDeadLetters() throws {
        let database = try TestDatabase()
        let connection = try database.connect()
        let queue = JobQueue()
        for _ in 0..<5 {
            _ = try queue.enqueue(NewJob(kind: "k", maxAttempts: 1), on: connection)
            let job = try #require(try queue.claim(from: "default", limit: 1, on: connection).first)
            try queue.fail([JobFailure(lease: job.lease, kind: .error, message: "x", retryIn: 0)], on: connection)
        }
        try connection.query(
            "UPDATE sluice.dead_letters SET died_at = now() - interval '40 days' WHERE id IN (SELECT id FROM sluice.dead_letters ORDER BY id LIMIT 3)",
            context: "age")
        #expect(try queue.pruneDeadLetters(olderThan: 30 * 86_400, batchSize: 2, on: connection) == 2)
        #expect(try queue.pruneDeadLetters(olderThan: 30 * 86_400, batchSize: 2, on: connection) == 1)
        #expect(try queue.pruneDeadLetters(olderThan: 30 * 86_400, batchSize: 2, on: connection) == 0)
        #expect(try queue.deadLetters(on: connection).count == 2)
    }
}
