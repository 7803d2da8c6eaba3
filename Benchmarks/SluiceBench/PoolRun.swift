import Foundation
import PGQueue
import TestKit

/// Runs the real `sluice work` binary against the benchmark database.
enum PoolRun {
    struct BurnDown {
        var seconds: Double
        var peakRSSKiB: Int
    }

    /// Starts `sluice work` with the queue already full and times it from start to the last committed
    /// completion (the moment sluice.jobs is empty), reading the process's peak RSS before stopping it.
    private static func workEnvironment(_ databaseURL: String) -> [String: String] {
        [
            "DATABASE_URL": databaseURL, "SLUICE_ADMIN_LISTEN": "off", "SLUICE_CONCURRENCY": "10",
            "SLUICE_TEST_JOBS": "1", "SLUICE_LOG_LEVEL": "warning",
        ]
    }

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

    /// The rate of a running `sluice work` (concurrency 10) with about `small` jobs waiting, beside its
    /// rate draining `large` jobs.
    ///
    /// The worker is started first, so its start-up is not timed. For the small figure the benchmark keeps
    /// the queue topped up to `small` jobs for `seconds` (checking every millisecond, adding what is
    /// missing in one statement) and counts what completed; the large one adds `large` jobs in one
    /// transaction and times from its commit to the moment `sluice.jobs` is empty.
    static func depthRates(binary: String, database: BenchDatabase, small: Int, seconds: Double, large: Int) throws
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
        func add(_ count: Int) throws -> Int64 {
            try connection.execute(adding, [count], context: "adding jobs").single().decode(Int64.self, at: 0)
        }

        // Waiting jobs are estimated from the ids (the newest added, the oldest still there): jobs finished
        // out of order above the oldest count as waiting, at most the worker's few claimed batches.
        var added = 0
        var newest: Int64 = 0
        let start = ContinuousClock.now
        while (ContinuousClock.now - start).seconds < seconds {
            let waiting = try probe.lowestLiveID().map { Int(newest - $0) + 1 } ?? 0
            let missing = small - waiting
            if missing >= small / 10 {
                newest = try add(missing)
                added += missing
            }
            usleep(1_000)
        }
        let smallSeconds = (ContinuousClock.now - start).seconds
        let smallRate = Double(added - (try probe.exactCount())) / smallSeconds
        while try !probe.isDrained() { usleep(1_000) }

        _ = try add(large)
        let largeStart = ContinuousClock.now
        while try !probe.isDrained() { usleep(5_000) }
        return (smallRate, Double(large) / (ContinuousClock.now - largeStart).seconds)
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
