import Foundation
import PGQueue
import TestKit

/// Runs the real `sluice work` binary against the benchmark database.
enum PoolRun {
    struct BurnDown {
        var seconds: Double
        var peakRSSKiB: Int
    }

    private static func workEnvironment(_ databaseURL: String) -> [String: String] {
        [
            "DATABASE_URL": databaseURL, "SLUICE_ADMIN_LISTEN": "off", "SLUICE_CONCURRENCY": "10",
            "SLUICE_TEST_JOBS": "1", "SLUICE_LOG_LEVEL": "warning", "SLUICE_PERIODIC": "off",
        ]
    }

    /// Starts `sluice work` with the queue already full and times it from start to the last committed
    /// completion (no no-op job left), reading the process's peak RSS before stopping it.
    static func burnDown(binary: String, database: BenchDatabase) throws -> BurnDown {
        let probe = try DrainProbe(database: database)
        let start = ContinuousClock.now
        let worker = try ChildProcess(
            path: binary, arguments: ["work"],
            environment: ChildProcess.inheriting(workEnvironment(database.url)), outputPath: nil)
        defer { worker.stop() }
        while try !probe.isDrained() { usleep(5_000) }
        let seconds = (ContinuousClock.now - start).seconds
        return BurnDown(seconds: seconds, peakRSSKiB: worker.peakRSSKiB)
    }

    /// The rate of a running `sluice work` (concurrency 10) kept at about `small` waiting jobs, beside the
    /// same worker kept at about `large`: the benchmark adds jobs as they are claimed (checking every
    /// millisecond, adding what is missing in one statement once 100 are), so each job costs the same at
    /// both depths and only the depth differs.
    ///
    /// Waiting means not yet claimed. Counting the jobs the worker holds or has finished but not yet
    /// recorded as waiting made the small depth a closed loop: a thousand jobs in flight at 60,000 a
    /// second is 17 ms of work, so the figure measured the round trip from completion to the next insert,
    /// not the worker at that depth (waiting 10 ms longer to record completions cut it by a third).
    ///
    /// The worker starts beside an empty queue and runs on from one depth to the other, so its statements
    /// were planned on a small table when the `large` jobs arrive in one transaction (a burst it once
    /// drained at a seventh of its speed, on plans made for an empty table). Each figure counts the jobs
    /// completed over `seconds`, after a second to settle.
    static func depthRates(binary: String, database: BenchDatabase, small: Int, large: Int, seconds: Double) throws
        -> (small: Double, large: Double)
    {
        let connection = try database.connect()
        let probe = try DrainProbe(database: database)
        let worker = try ChildProcess(
            path: binary, arguments: ["work"],
            environment: ChildProcess.inheriting(workEnvironment(database.url)), outputPath: nil)
        defer { worker.stop() }
        Thread.sleep(forTimeInterval: 1)
        let adding = PreparedStatement(
            name: "bench_depth_add",
            sql: """
                SELECT max(id) FROM sluice.enqueue_many(array_fill('sluice.noop'::text, ARRAY[$1::integer]),
                                                        array_fill('{}'::jsonb, ARRAY[$1::integer])) AS id
                """)
        var newest: Int64 = 0
        func add(_ count: Int) throws {
            guard count > 0 else { return }
            newest = try connection.execute(adding, [count], context: "adding jobs").single().decode(Int64.self, at: 0)
        }
        // Estimated from the ids: the newest added, and the lowest not yet claimed.
        func waiting() throws -> Int { try probe.lowestWaitingID().map { Int(newest - $0) + 1 } ?? 0 }
        // The same from the lowest still there: jobs finished out of order above it count as live, a few
        // claimed batches at most, alike at both ends of a window.
        func live() throws -> Int { try probe.lowestLiveID().map { Int(newest - $0) + 1 } ?? 0 }
        // Keeps about `depth` jobs waiting for `duration` seconds; returns the jobs completed a second.
        func keep(_ depth: Int, for duration: Double) throws -> Double {
            let before = try live()
            var added = 0
            let start = ContinuousClock.now
            while (ContinuousClock.now - start).seconds < duration {
                let missing = depth - (try waiting())
                if missing >= 100 {
                    try add(missing)
                    added += missing
                }
                usleep(1_000)
            }
            let after = try live()
            return Double(before + added - after) / (ContinuousClock.now - start).seconds
        }

        _ = try keep(small, for: 1)
        let smallRate = try keep(small, for: seconds)
        try add(large - (try waiting()))
        _ = try keep(large, for: 1)
        let largeRate = try keep(large, for: seconds)
        return (smallRate, largeRate)
    }

    /// With `sluice work` idle, enqueues one `sluice.test.mark` job at a time, 20 ms apart, and returns
    /// each job's wait from its enqueue (`created_at`) to its handler's start, in milliseconds.
    static func enqueueToStart(binary: String, databaseURL: String, samples: Int, on connection: PostgresConnection)
        throws -> [Double]
    {
        try connection.run(
            script: """
                CREATE SCHEMA IF NOT EXISTS sluice_test;
                CREATE TABLE IF NOT EXISTS sluice_test.marks (
                    job_id bigint NOT NULL, attempt integer NOT NULL, enqueued_at timestamptz, started_at timestamptz
                );
                TRUNCATE sluice_test.marks;
                """,
            context: "creating the marks table")
        let worker = try ChildProcess(
            path: binary, arguments: ["work"],
            environment: ChildProcess.inheriting(workEnvironment(databaseURL)), outputPath: nil)
        defer { worker.stop() }
        Thread.sleep(forTimeInterval: 1)
        let queue = JobQueue()
        for _ in 0..<samples {
            try queue.enqueue(NewJob(kind: "sluice.test.mark"), on: connection)
            Thread.sleep(forTimeInterval: 0.02)
        }
        Thread.sleep(forTimeInterval: 0.5)
        return try connection.query(
            "SELECT extract(epoch FROM started_at - enqueued_at)::float8 * 1000 FROM sluice_test.marks",
            context: "reading start latencies"
        ).map { try $0.decode(Double.self, at: 0) }
    }
}

struct BenchFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
