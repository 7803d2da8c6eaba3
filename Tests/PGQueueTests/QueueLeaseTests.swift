import Foundation
import PGQueue
import TestKit
import Testing

@Suite("leases, rescue and fencing")
struct QueueLeaseTests {
    @Test("a rescued job's old holder can neither complete nor fail it; the new holder can")
    func fencing() throws {
        let database = try TestDatabase()
        let connection = try database.connect()
        let stale = JobQueue(workerID: "stale", leaseSeconds: 0.2)
        let fresh = JobQueue(workerID: "fresh", leaseSeconds: 30)
        let id = try stale.enqueue(NewJob(kind: "k"), on: connection)
        let oldJob = try #require(try stale.claim(from: "default", limit: 1, on: connection).first)
        Thread.sleep(forTimeInterval: 0.3)
        let report = try fresh.rescueExpired(on: connection)
        #expect(report.rescued == [id])
        let newJob = try #require(try fresh.claim(from: "default", limit: 1, on: connection).first)
        #expect(newJob.attempt == 2)

        #expect(try stale.complete([oldJob.lease], on: connection).isEmpty)
        #expect(
            try stale.fail([JobFailure(lease: oldJob.lease, kind: .error, message: "late", retryIn: 0)], on: connection)
                .isEmpty)
        #expect(try stale.heartbeat([oldJob.lease], on: connection).isEmpty)
        #expect(try !stale.snooze(oldJob.lease, for: 0, on: connection))
        // The same worker id with the old attempt is fenced too (a hung handler in a process that re-claimed).
        #expect(try fresh.complete([oldJob.lease], on: connection).isEmpty)

        #expect(try fresh.complete([newJob.lease], on: connection) == [id])
    }

    @Test("a worker that claims a job again after a snooze cannot apply an outcome of its earlier claim")
    func fencingAcrossClaimsOfOneWorker() throws {
        let database = try TestDatabase()
        let connection = try database.connect()
        let queue = JobQueue(workerID: "w")
        let id = try queue.enqueue(NewJob(kind: "k"), on: connection)
        let first = try #require(try queue.claim(from: "default", limit: 1, on: connection).first)
        #expect(try queue.snooze(first.lease, for: 0, on: connection))
        let second = try #require(try queue.claim(from: "default", limit: 1, on: connection).first)
        // The snooze gave the attempt back, so both claims are attempt 1 of the same worker.
        #expect(second.attempt == first.attempt)
        #expect(second.holder != first.holder)
        #expect(
            try queue.fail(
                [JobFailure(lease: first.lease, kind: .timeout, message: "late", retryIn: 0)], on: connection
            ).isEmpty)
        #expect(try queue.complete([first.lease], on: connection).isEmpty)
        #expect(try queue.complete([second.lease], on: connection) == [id])
    }

    @Test("the rescuer returns expired leases with an error entry and dead-letters jobs on their last attempt")
    func rescue() throws {
        let database = try TestDatabase()
        let connection = try database.connect()
        let queue = JobQueue(leaseSeconds: 0.1)
        let retryable = try queue.enqueue(NewJob(kind: "k", maxAttempts: 2), on: connection)
        let lastTry = try queue.enqueue(NewJob(kind: "k", maxAttempts: 1), on: connection)
        let claimed = try queue.claim(from: "default", limit: 10, on: connection)
        #expect(claimed.count == 2)
        Thread.sleep(forTimeInterval: 0.2)
        let report = try queue.rescueExpired(on: connection)
        #expect(report.rescued == [retryable])
        #expect(report.dead == [lastTry])
        #expect(try queue.deadLetter(id: lastTry, on: connection)?.reason == "lease_expired")
        let kind = try connection.query(
            "SELECT errors -> 0 ->> 'kind' FROM sluice.jobs WHERE id = $1", [retryable], context: "read"
        ).single()
        #expect(try kind.decode(String.self, at: 0) == "lease_expired")
        // Nothing left to rescue.
        #expect(try queue.rescueExpired(on: connection) == RescueReport())
    }

    @Test("a heartbeat keeps a lease from expiring")
    func heartbeat() throws {
        let database = try TestDatabase()
        let connection = try database.connect()
        let queue = JobQueue(leaseSeconds: 0.5)
        let id = try queue.enqueue(NewJob(kind: "k"), on: connection)
        let job = try #require(try queue.claim(from: "default", limit: 1, on: connection).first)
        for _ in 0..<4 {
            Thread.sleep(forTimeInterval: 0.2)
            #expect(try queue.heartbeat([job.lease], on: connection) == [id])
        }
        #expect(try queue.rescueExpired(on: connection) == RescueReport())
        #expect(try queue.complete([job.lease], on: connection) == [id])
    }

    @Test("snooze and release give the attempt back")
    func snoozeAndRelease() throws {
        let database = try TestDatabase()
        let connection = try database.connect()
        let queue = JobQueue()
        let id = try queue.enqueue(NewJob(kind: "k", maxAttempts: 1), on: connection)
        var job = try #require(try queue.claim(from: "default", limit: 1, on: connection).first)
        #expect(try queue.snooze(job.lease, for: 3600, on: connection))
        #expect(try queue.claim(from: "default", limit: 1, on: connection).isEmpty)
        try connection.query("UPDATE sluice.jobs SET run_at = now() WHERE id = $1", [id], context: "make due")
        job = try #require(try queue.claim(from: "default", limit: 1, on: connection).first)
        #expect(job.attempt == 1)
        #expect(try queue.release([job.lease], on: connection) == [id])
        job = try #require(try queue.claim(from: "default", limit: 1, on: connection).first)
        #expect(job.attempt == 1)
    }
}

@Suite("completing and claiming in one statement")
struct CompleteAndClaimTests {
    @Test("completes the held leases, fences the rest, and claims the next batch")
    func completeAndClaim() throws {
        let database = try TestDatabase()
        let connection = try database.connect()
        let queue = JobQueue(workerID: "w")
        let ids = try queue.enqueue((0..<5).map { _ in NewJob(kind: "k") }, on: connection)
        let first = try queue.claim(from: "default", limit: 2, on: connection)
        #expect(first.map(\.id) == Array(ids[0..<2]))
        let stale = JobLease(id: ids[0], attempt: 7, holder: first[0].holder)
        let next = try queue.claim(from: "default", limit: 2, completing: [first[1].lease, stale], on: connection)
        #expect(next.completed == [ids[1]])
        #expect(next.claimed.map(\.id) == Array(ids[2..<4]))
        let last = try queue.claim(from: "default", limit: 10, completing: next.claimed.map(\.lease), on: connection)
        #expect(Set(last.completed) == Set(ids[2..<4]))
        #expect(last.claimed.map(\.id) == [ids[4]])
    }

    @Test("ten workers completing and claiming at once neither deadlock nor lose a job")
    func noDeadlock() throws {
        let database = try TestDatabase()
        let setup = try database.connect()
        let total = 20_000
        _ = try JobQueue().enqueue(Array(repeating: NewJob(kind: "k"), count: total), notify: false, on: setup)
        let completed = Box<Int>(0)
        try onThreads(10) { worker in
            let connection = try database.connect()
            let queue = JobQueue(workerID: "w\(worker)")
            var running: [JobLease] = []
            repeat {
                let step = try queue.claim(from: "default", limit: 200, completing: running, on: connection)
                completed.value.withLock { $0 += step.completed.count }
                running = step.claimed.map(\.lease)
            } while !running.isEmpty
        }
        #expect(completed.value.withLock { $0 } == total)
    }

    @Test("a worker's heartbeats and its completions, on two connections, given leases in any order, never deadlock")
    func heartbeatsAndCompletionsTakeLocksInOneOrder() throws {
        let database = try TestDatabase()
        let setup = try database.connect()
        let rounds = 30
        let perRound = 300
        _ = try JobQueue().enqueue(
            Array(repeating: NewJob(kind: "k"), count: rounds * perRound), notify: false, on: setup)
        let queue = JobQueue()
        var random = SeededGenerator(seed: 40)
        for _ in 0..<rounds {
            let leases = try queue.claim(from: "default", limit: perRound, on: setup).map(\.lease)
            let forward = leases.shuffled(using: &random)
            let backward = Array(forward.reversed())
            let deadlocks = Box<Int>(0)
            try onThreads(2) { side in
                do {
                    if side == 0 {
                        // As the pool's outcome flusher sends them, on a queue connection.
                        let completer = try PostgresConnection(
                            connectionString: database.url, sessionSettings: JobQueue.sessionSettings)
                        _ = try queue.complete(forward, on: completer)
                    } else {
                        // As maintenance sends them, on a connection of its own.
                        let connection = try database.connect()
                        _ = try queue.heartbeat(backward, on: connection)
                    }
                } catch let error as PostgresError where error.sqlState == "40P01" {
                    deadlocks.value.withLock { $0 += 1 }
                }
            }
            #expect(deadlocks.value.withLock { $0 } == 0)
            _ = try queue.complete(leases, on: setup)
        }
        #expect(
            try setup.query("SELECT count(*) FROM sluice.jobs", context: "left").single().decode(Int.self, at: 0) == 0)
    }
}
