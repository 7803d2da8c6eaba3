import Foundation
import PGQueue
import TestKit
import Testing

@Suite("enqueueing batches of unique jobs (sluice.enqueue_unique)")
struct QueueEnqueueUniqueTests {
    @Test("a batch adds each new key once, reports held keys and repeats within the batch as duplicates")
    func batchResults() throws {
        let database = try TestDatabase()
        let connection = try database.connect()
        let queue = JobQueue()
        let held = try queue.enqueue(NewJob(kind: "k", uniqueKey: "held"), on: connection)
        let results = try queue.enqueueUnique(
            [
                NewJob(kind: "k", payload: #"{"n": 1}"#, queue: "webhooks", uniqueKey: "b"),
                NewJob(kind: "k", payload: #"{"n": 2}"#, queue: "webhooks", uniqueKey: "held"),
                NewJob(kind: "k", payload: #"{"n": 3}"#, queue: "webhooks", uniqueKey: "a"),
                NewJob(kind: "k", payload: #"{"n": 4}"#, queue: "webhooks", uniqueKey: "b"),
            ], on: connection)
        #expect(results.count == 4)
        guard case .enqueued(let b) = results[0], case .enqueued = results[2] else {
            Issue.record("expected new jobs at positions 0 and 2, got \(results)")
            return
        }
        #expect(results[1] == .duplicate(jobID: held))
        #expect(results[3] == .duplicate(jobID: b))
        let rows = try connection.query(
            "SELECT unique_key || ' ' || queue || ' ' || coalesce(payload ->> 'n', '-') FROM sluice.jobs ORDER BY 1",
            context: "read")
        // The first occurrence of a key supplies its payload.
        #expect(
            try rows.map { try $0.decode(String.self, at: 0) } == ["a webhooks 3", "b webhooks 1", "held default -"])
    }

    @Test("keys past their retention are taken over; keys within it absorb the job")
    func retention() throws {
        let database = try TestDatabase()
        let connection = try database.connect()
        let queue = JobQueue(uniqueRetentionSeconds: 3600)
        let first = try queue.enqueue(NewJob(kind: "k", uniqueKey: "evt"), on: connection)
        let job = try #require(try queue.claim(from: "default", limit: 1, on: connection).first)
        try queue.complete([job.lease], on: connection)
        #expect(
            try queue.enqueueUnique([NewJob(kind: "k", uniqueKey: "evt")], on: connection) == [.duplicate(jobID: first)]
        )

        try connection.query("UPDATE sluice.unique_keys SET expires_at = now() - interval '1 second'", context: "age")
        let again = try queue.enqueueUnique([NewJob(kind: "k", uniqueKey: "evt")], on: connection)
        guard case .enqueued(let id) = again.first else {
            Issue.record("an expired key should be taken over, got \(again)")
            return
        }
        #expect(id != first)
    }

    @Test("twenty concurrent batches over the same keys, in different orders, make one job per key")
    func concurrentBatches() throws {
        let database = try TestDatabase()
        let keys = (0..<40).map { "evt_\($0)" }
        let added = Box<[Int64]>([])
        try onThreads(20) { index in
            let connection = try database.connect()
            let batch = keys.shuffled().map { NewJob(kind: "k", queue: "webhooks", uniqueKey: $0) }
            let results = try JobQueue().enqueueUnique(batch, on: connection)
            let new = results.compactMap { result -> Int64? in
                if case .enqueued(let id) = result { return id } else { return nil }
            }
            added.value.withLock { $0.append(contentsOf: new) }
        }
        let connection = try database.connect()
        let jobs = try connection.query("SELECT count(*) FROM sluice.jobs", context: "count").single()
            .decode(Int.self, at: 0)
        #expect(jobs == keys.count)
        #expect(added.value.withLock { $0.count } == keys.count)
    }

    @Test("a job without a unique key or with a non-object payload is refused, and the batch adds nothing")
    func refusesBadInput() throws {
        let database = try TestDatabase()
        let connection = try database.connect()
        for bad in [
            NewJob(kind: "k"), NewJob(kind: "k", payload: "[1]", uniqueKey: "x"), NewJob(kind: "", uniqueKey: "y"),
        ] {
            let error = try #require(throws: PostgresError.self) {
                try JobQueue().enqueueUnique([NewJob(kind: "k", uniqueKey: "fine"), bad], on: connection)
            }
            #expect(error.sqlState == "22023")
        }
        #expect(
            try connection.query("SELECT count(*) FROM sluice.jobs", context: "count").single().decode(Int.self, at: 0)
                == 0)
    }
}
