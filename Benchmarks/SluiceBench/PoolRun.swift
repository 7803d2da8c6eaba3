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

    static func burnDown(binary: String, databaseURL: String, on connection: PostgresConnection) throws -> BurnDown {
        let start = ContinuousClock.now
        let worker = try ChildProcess(
            path: binary, arguments: ["work"],
            environment: ChildProcess.inheriting(workEnvironment(databaseURL)), outputPath: nil)
        defer { worker.stop() }
        let empty = PreparedStatement(name: "bench_empty", sql: "SELECT NOT EXISTS (SELECT 1 FROM sluice.jobs)")
        while try !connection.execute(empty, context: "checking for jobs").single().decode(Bool.self, at: 0) {
            usleep(5_000)
        }
        let seconds = (ContinuousClock.now - start).seconds
        return BurnDown(seconds: seconds, peakRSSKiB: worker.peakRSSKiB)
    }

    /// The drain rate of a running `sluice work` (concurrency 10) with `small` and with `large` jobs waiting.
    ///
    /// The worker is started first and left idle, so its start-up is not timed. Each drain adds its jobs in
    /// one transaction (one NOTIFY) and is timed from that commit to the moment `sluice.jobs` is empty;
    /// `smallRounds` small drains are summed, so the figure is not one 10 ms sample. The small drains run
    /// before and after the large one, so both see the table at its smallest and after a million dead rows.
    static func drainRates(
        binary: String, databaseURL: String, small: Int, smallRounds: Int, large: Int,
        on connection: PostgresConnection
    ) throws -> (small: Double, large: Double) {
        let worker = try ChildProcess(
            path: binary, arguments: ["work"],
            environment: ChildProcess.inheriting(workEnvironment(databaseURL)), outputPath: nil)
        defer { worker.stop() }
        Thread.sleep(forTimeInterval: 1)
        let add = PreparedStatement(
            name: "bench_drain_add",
            sql: """
                SELECT count(*) FROM sluice.enqueue_many(array_fill('sluice.noop'::text, ARRAY[$1::integer]),
                                                         array_fill('{}'::jsonb, ARRAY[$1::integer]))
                """)
        let empty = PreparedStatement(name: "bench_drain_empty", sql: "SELECT NOT EXISTS (SELECT 1 FROM sluice.jobs)")
        func drain(_ count: Int) throws -> Duration {
            try connection.execute(add, [count], context: "adding jobs to drain")
            let start = ContinuousClock.now
            while try !connection.execute(empty, context: "checking for jobs").single().decode(Bool.self, at: 0) {
                usleep(200)
            }
            return ContinuousClock.now - start
        }
        var smallTime = Duration.zero
        for _ in 0..<(smallRounds / 2) { smallTime += try drain(small) }
        let largeTime = try drain(large)
        for _ in (smallRounds / 2)..<smallRounds { smallTime += try drain(small) }
        return (Double(small * smallRounds) / smallTime.seconds, Double(large) / largeTime.seconds)
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
