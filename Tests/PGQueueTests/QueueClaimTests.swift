import Foundation
import PGQueue
import Synchronization
import TestKit
import Testing

@Suite("claiming")
struct QueueClaimTests {
    @Test("claims go by priority, then run_at, then id; future jobs wait")
    func ordering() throws {
        let database = try TestDatabase()
        let connection = try database.connect()
        let queue = JobQueue()
        let now = Date()
        let late = try queue.enqueue(NewJob(kind: "k", priority: 5, runAt: now.addingTimeInterval(-10)), on: connection)
        let urgentNewer = try queue.enqueue(
            NewJob(kind: "k", priority: -1, runAt: now.addingTimeInterval(-1)), on: connection)
        let urgentOlder = try queue.enqueue(
            NewJob(kind: "k", priority: -1, runAt: now.addingTimeInterval(-5)), on: connection)
        let normalFirst = try queue.enqueue(NewJob(kind: "k", runAt: now.addingTimeInterval(-3)), on: connection)
        let normalTie = try queue.enqueue(NewJob(kind: "k", runAt: now.addingTimeInterval(-3)), on: connection)
        _ = try queue.enqueue(NewJob(kind: "k", priority: -100, runAt: now.addingTimeInterval(3600)), on: connection)

        var claimed: [Int64] = []
        while let job = try queue.claim(from: "default", limit: 1, on: connection).first {
            claimed.append(job.id)
        }
        #expect(claimed == [urgentOlder, urgentNewer, normalFirst, normalTie, late])
        // A batch comes back in the same order.
        let other = try TestDatabase()
        let otherConnection = try other.connect()
        let ids = try queue.enqueue(
            [NewJob(kind: "k", priority: 2), NewJob(kind: "k", priority: 1), NewJob(kind: "k", priority: 3)],
            on: otherConnection)
        let batch = try queue.claim(from: "default", limit: 10, on: otherConnection)
        #expect(batch.map(\.id) == [ids[1], ids[0], ids[2]])
    }

    @Test("many threads claiming at once see every job exactly once")
    func claimsAreExclusive() throws {
        let database = try TestDatabase()
        let setup = try database.connect()
        let queue = JobQueue()
        let total = 3000
        let jobs = (0..<total).map { NewJob(kind: "k", payload: "{\"n\": \($0)}") }
        let enqueued = Set(try queue.enqueue(jobs, notify: false, on: setup))
        let seen = Box<[Int64]>([])
        try onThreads(10) { worker in
            let connection = try database.connect()
            // Each thread is its own worker: fencing would hide a double claim by the same worker id.
            let mine = JobQueue(workerID: "worker-\(worker)")
            while true {
                let batch = try mine.claim(from: "default", limit: 7, on: connection)
                if batch.isEmpty { break }
                seen.value.withLock { $0.append(contentsOf: batch.map(\.id)) }
                let completed = try mine.complete(batch.map(\.lease), on: connection)
                precondition(completed.count == batch.count)
            }
        }
        let claimed = seen.value.withLock { $0 }
        #expect(claimed.count == total)
        #expect(Set(claimed) == enqueued)
        let left = try setup.query("SELECT count(*) FROM sluice.jobs", context: "count").single().decode(
            Int.self, at: 0)
        #expect(left == 0)
    }

    @Test("the claim counts the attempt and sets a lease held by this worker")
    func claimCountsAttempt() throws {
        let database = try TestDatabase()
        let connection = try database.connect()
        let queue = JobQueue(workerID: "w1", leaseSeconds: 30)
        let id = try queue.enqueue(NewJob(kind: "k", maxAttempts: 3), on: connection)
        let job = try #require(try queue.claim(from: "default", limit: 1, on: connection).first)
        #expect(job.id == id)
        #expect(job.attempt == 1)
        #expect(job.maxAttempts == 3)
        let row = try connection.query(
            "SELECT state, attempt, locked_by, extract(epoch FROM locked_until - now())::float8 FROM sluice.jobs WHERE id = $1",
            [id], context: "read"
        ).single()
        #expect(try row.decode(String.self, at: 0) == "running")
        #expect(try row.decode(Int.self, at: 1) == 1)
        #expect(try row.decode(String.self, at: 2).hasPrefix("w1/"))
        let remaining = try row.decode(Double.self, at: 3)
        #expect(remaining > 25 && remaining <= 30)
        // A running job is not claimed again.
        #expect(try queue.claim(from: "default", limit: 10, on: connection).isEmpty)
    }

    @Test("a paused queue is not claimed from until resumed; other queues carry on")
    func pausedQueue() throws {
        let database = try TestDatabase()
        let connection = try database.connect()
        let queue = JobQueue()
        let paused = try queue.enqueue(NewJob(kind: "k", queue: "slow"), on: connection)
        let other = try queue.enqueue(NewJob(kind: "k", queue: "fast"), on: connection)
        try connection.query("SELECT sluice.pause_queue('slow')", context: "pause from SQL")
        #expect(try queue.claim(from: "slow", limit: 10, on: connection).isEmpty)
        #expect(try queue.claim(from: "fast", limit: 10, on: connection).map(\.id) == [other])
        let stats = try queue.stats(on: connection)
        #expect(stats.first { $0.queue == "slow" }?.paused == true)
        #expect(stats.first { $0.queue == "slow" }?.available == 1)
        try queue.resume(queue: "slow", on: connection)
        #expect(try queue.claim(from: "slow", limit: 10, on: connection).map(\.id) == [paused])
    }

    @Test("a waiting job can be cancelled; a running one cannot")
    func cancel() throws {
        let database = try TestDatabase()
        let connection = try database.connect()
        let queue = JobQueue()
        let waiting = try queue.enqueue(NewJob(kind: "k", queue: "a", uniqueKey: "once"), on: connection)
        let running = try queue.enqueue(NewJob(kind: "k", queue: "b"), on: connection)
        _ = try queue.claim(from: "b", limit: 1, on: connection)
        #expect(try queue.cancel(jobID: waiting, on: connection))
        #expect(try !queue.cancel(jobID: running, on: connection))
        #expect(try !queue.cancel(jobID: 999_999, on: connection))
        // Cancelling frees the unique key.
        #expect(try queue.enqueue(NewJob(kind: "k", uniqueKey: "once"), on: connection) != waiting)
    }

    @Test(
        "claims planned on a quiet queue walk the claim index in order when a burst arrives",
        arguments: [0, 100])
    func claimPlansSurviveAQuietSpell(measuredJobs: Int) throws {
        let database = try TestDatabase()
        let setup = try database.connect()
        // Statistics that say the queue is empty or nearly so, as autovacuum leaves them after a quiet
        // spell; autovacuum measuring the table again during the test would make the plans below afresh.
        try setup.run(script: "ALTER TABLE sluice.jobs SET (autovacuum_enabled = false)", context: "pausing autovacuum")
        if measuredJobs > 0 {
            _ = try JobQueue().enqueue(Array(repeating: NewJob(kind: "k"), count: measuredJobs), on: setup)
        }
        try setup.run(script: "VACUUM ANALYZE sluice.jobs", context: "measuring the quiet queue")
        let connection = try PostgresConnection(
            connectionString: database.url, sessionSettings: JobQueue.sessionSettings)
        let queue = JobQueue()
        // Each claim statement is prepared, with its generic plan, on the quiet queue: from the head, past
        // a bound, and each with a completion.
        let start = ClaimPosition(priority: 0, runAtMicroseconds: 0, id: 0)
        let stale = [JobLease(id: 1, attempt: 1, holder: "gone")]
        _ = try queue.claim(from: "default", limit: 10, completing: [], after: nil, on: connection)
        _ = try queue.claim(from: "default", limit: 10, completing: [], after: start, on: connection)
        _ = try queue.claim(from: "default", limit: 10, completing: stale, after: nil, on: connection)
        _ = try queue.claim(from: "default", limit: 10, completing: stale, after: start, on: connection)
        // Then a burst arrives, and the cached plans meet it.
        let burst = 20_000
        _ = try queue.enqueue(Array(repeating: NewJob(kind: "k"), count: burst), notify: false, on: setup)
        let claim = "'default', 1000, 'holder', 30"
        let completion = "'{1}', '{1}', 60, '{gone}'"
        let bound = "0, 0, 0"
        let executions = [
            "sluice_claim(\(claim))",
            "sluice_claim_past(\(claim), \(bound))",
            "sluice_complete_and_claim(\(claim), \(completion))",
            "sluice_complete_and_claim_past(\(claim), \(completion), \(bound))",
        ]
        for execution in executions {
            let plan = try connection.query("EXPLAIN EXECUTE \(execution)", context: "reading the cached plan")
                .map { try $0.decode(String.self, at: 0) }.joined(separator: "\n")
            // A plan made for an empty table scans the table whole and sorts what it found; one made for a
            // hundred jobs gathers the leased rows with a bitmap. At a million jobs a whole scan and sort
            // takes half a second a claim, against a walk of the index that stops at its LIMIT.
            #expect(plan.contains("Index Scan using jobs_claim_order"), "\(execution):\n\(plan)")
            #expect(!plan.contains("Sort"), "\(execution):\n\(plan)")
            #expect(!plan.contains("Seq Scan on jobs"), "\(execution):\n\(plan)")
            #expect(!plan.contains("Bitmap"), "\(execution):\n\(plan)")
            // And the plan is the one made on the quiet queue, not one made afresh for the burst (which the
            // settings would not be needed for): its scan of the waiting jobs expects a few, not the burst.
            // (A few more than were measured: the planner scales the measured rows by the pages the table
            // has grown to, and the claims above may have added one.)
            let estimates = plan.split(separator: "\n").filter { $0.contains(" on jobs  (") }.compactMap { line in
                line.firstMatch(of: /rows=(\d+)/).flatMap { Int($0.1) }
            }
            #expect(!estimates.isEmpty && estimates.allSatisfy { $0 < burst / 10 }, "\(execution):\n\(plan)")
        }
    }
}
