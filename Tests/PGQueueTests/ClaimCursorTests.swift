import Foundation
import PGQueue
import Synchronization
import TestKit
import Testing

/// Claims that start past the last job claimed (ClaimCursor), so a held snapshot's dead prefix is not
/// walked on every claim, without starving what lands behind the bound.
@Suite("claim cursor")
struct ClaimCursorTests {
    @Test("a claim past the bound continues exactly where the last one stopped, ties of run_at included")
    func continuesExactly() throws {
        let database = try TestDatabase()
        let connection = try database.connect()
        let queue = JobQueue()
        // One statement: every job has the same run_at, so only the id separates them.
        let ids = try queue.enqueue(Array(repeating: NewJob(kind: "k"), count: 30), notify: false, on: connection)
        let first = try queue.claim(from: "default", limit: 10, completing: [], after: nil, on: connection)
        #expect(first.claimed.map(\.id) == Array(ids[0..<10]))
        let next = try queue.claim(from: "default", limit: 10, completing: [], after: first.last, on: connection)
        #expect(next.claimed.map(\.id) == Array(ids[10..<20]))
        #expect(next.last?.id == ids[19])
    }

    @Test("a higher priority or an earlier run_at behind the bound waits for a claim from the head, not longer")
    func behindTheBound() throws {
        let database = try TestDatabase()
        let connection = try database.connect()
        let queue = JobQueue()
        _ = try queue.enqueue(Array(repeating: NewJob(kind: "k"), count: 20), notify: false, on: connection)
        let first = try queue.claim(from: "default", limit: 5, completing: [], after: nil, on: connection)
        let urgent = try queue.enqueue(NewJob(kind: "k", priority: -5), on: connection)
        let early = try queue.enqueue(NewJob(kind: "k", runAt: Date().addingTimeInterval(-3600)), on: connection)
        let past = try queue.claim(from: "default", limit: 5, completing: [], after: first.last, on: connection)
        #expect(!past.claimed.contains { [urgent, early].contains($0.id) }, "behind the bound")
        let head = try queue.claim(from: "default", limit: 2, completing: [], after: nil, on: connection)
        #expect(head.claimed.map(\.id) == [urgent, early])
    }

    @Test("the cursor claims from the head at least every rescan interval, and at once after a short claim")
    func policy() {
        let clock = ContinuousClock.now
        var cursor = ClaimCursor(rescanInterval: .seconds(1))
        #expect(cursor.start(now: clock) == nil, "the first claim starts at the head")
        let a = ClaimPosition(priority: 0, runAtMicroseconds: 10, id: 5)
        cursor.record(start: nil, wanted: 5, claimed: 5, last: a, now: clock)
        #expect(cursor.start(now: clock + .milliseconds(500)) == a)
        let b = ClaimPosition(priority: 0, runAtMicroseconds: 10, id: 10)
        cursor.record(start: a, wanted: 5, claimed: 5, last: b, now: clock + .milliseconds(500))
        #expect(cursor.start(now: clock + .milliseconds(900)) == b)
        #expect(cursor.start(now: clock + .seconds(1)) == nil, "the rescan interval is up")
        cursor.record(start: b, wanted: 5, claimed: 2, last: nil, now: clock + .milliseconds(950))
        #expect(cursor.start(now: clock + .milliseconds(951)) == nil, "a short claim past the bound: the head next")
    }

    @Test("threads claiming past their own bounds and from the head never claim a job twice")
    func exclusive() throws {
        let database = try TestDatabase()
        let setup = try database.connect()
        let queue = JobQueue()
        let total = 3000
        let enqueued = Set(
            try queue.enqueue(Array(repeating: NewJob(kind: "k"), count: total), notify: false, on: setup))
        let seen = Box<[Int64]>([])
        try onThreads(6) { worker in
            let connection = try database.connect()
            let mine = JobQueue(workerID: "worker-\(worker)")
            var cursor = ClaimCursor(rescanInterval: .milliseconds(5))
            var held: [JobLease] = []
            var idle = 0
            while idle < 3 {
                let start = cursor.start(now: .now)
                let step = try mine.claim(from: "default", limit: 7, completing: held, after: start, on: connection)
                cursor.record(start: start, wanted: 7, claimed: step.claimed.count, last: step.last, now: .now)
                seen.value.withLock { $0.append(contentsOf: step.claimed.map(\.id)) }
                held = step.claimed.map(\.lease)
                idle = step.claimed.isEmpty && start == nil ? idle + 1 : 0
            }
            _ = try mine.complete(held, on: connection)
        }
        let claimed = seen.value.withLock { $0 }
        #expect(claimed.count == total && Set(claimed) == enqueued)
    }
}
