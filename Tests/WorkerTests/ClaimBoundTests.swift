import Foundation
import PGQueue
import TestKit
import Testing

/// The pool claims past the last job it claimed (ClaimCursor); what lands behind that bound still goes first.
@Suite("claims past the bound", .serialized)
struct ClaimBoundTests {
    @Test("while the pool drains a backlog, a higher-priority job and one with an earlier run_at start before it ends")
    func urgentJobsOvertake() throws {
        let database = try TestDatabase()
        let connection = try database.connect()
        let queue = JobQueue()
        let backlog = 20_000
        for _ in 0..<(backlog / 1000) {
            _ = try queue.enqueue(
                Array(repeating: NewJob(kind: "sluice.test.mark"), count: 1000), notify: false, on: connection)
        }
        let worker = try SluiceProcess(
            ["work"], databaseURL: database.url,
            environment: ["SLUICE_TEST_JOBS": "1", "SLUICE_CONCURRENCY": "4", "SLUICE_PERIODIC": "off"])
        defer { worker.signal(SIGTERM) }
        #expect(
            eventually(timeout: 30) { ((try? database.count("SELECT count(*) FROM sluice_test.marks")) ?? 0) > 500 })
        let urgent = try queue.enqueue(NewJob(kind: "sluice.test.mark", priority: -10), on: connection)
        let early = try queue.enqueue(
            NewJob(kind: "sluice.test.mark", runAt: Date().addingTimeInterval(-86_400)), on: connection)
        #expect(
            eventually(timeout: 60) { (try? database.count("SELECT count(*) FROM sluice.jobs")) == 0 }, "\(worker.log)")
        for id in [urgent, early] {
            // Ordering, not timing: backlog jobs that started after this one are the proof it did not wait.
            let overtaken = try database.count(
                """
                SELECT count(*) FROM sluice_test.marks m
                WHERE m.started_at > (SELECT started_at FROM sluice_test.marks WHERE job_id = $1) AND m.job_id <> ALL($2::bigint[])
                """, [id, [urgent, early]])
            #expect(overtaken > 1000, "job \(id) started with only \(overtaken) backlog jobs after it")
        }
        #expect(
            try database.count("SELECT count(*) - count(DISTINCT job_id) FROM sluice_test.marks") == 0, "none twice")
    }
}
