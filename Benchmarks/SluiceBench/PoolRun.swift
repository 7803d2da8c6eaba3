import Foundation
import PGQueue

/// Runs the real `sluice work` binary against the benchmark database.
enum PoolRun {
    struct BurnDown {
        var seconds: Double
        var peakRSSKiB: Int
    }

    /// Starts `sluice work` with the queue already full and times it from start to the last committed
    /// completion (the moment sluice.jobs is empty), reading the process's peak RSS before stopping it.
    static func burnDown(binary: String, databaseURL: String, on connection: PostgresConnection) throws -> BurnDown {
        let start = ContinuousClock.now
        let pid = try spawn(binary, databaseURL: databaseURL)
        defer { stop(pid) }
        let empty = PreparedStatement(name: "bench_empty", sql: "SELECT NOT EXISTS (SELECT 1 FROM sluice.jobs)")
        while try !connection.execute(empty, context: "checking for jobs").single().decode(Bool.self, at: 0) {
            usleep(5_000)
        }
        let seconds = (ContinuousClock.now - start).seconds
        return BurnDown(seconds: seconds, peakRSSKiB: peakRSS(pid))
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
        let pid = try spawn(binary, databaseURL: databaseURL)
        defer { stop(pid) }
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

    private static func spawn(_ binary: String, databaseURL: String) throws -> pid_t {
        var environment = ProcessInfo.processInfo.environment
        environment["DATABASE_URL"] = databaseURL
        environment["SLUICE_ADMIN_LISTEN"] = "off"
        environment["SLUICE_CONCURRENCY"] = "10"
        environment["SLUICE_TEST_JOBS"] = "1"
        environment["SLUICE_LOG_LEVEL"] = "warning"
        func cString(_ text: String) -> UnsafeMutablePointer<CChar>? { strdup(text) }
        let argv = [cString(binary), cString("work"), nil]
        let envp = environment.map { cString("\($0.key)=\($0.value)") } + [nil]
        defer {
            argv.forEach { free($0) }
            envp.forEach { free($0) }
        }
        var pid: pid_t = 0
        let result = posix_spawn(&pid, binary, nil, nil, argv, envp)
        guard result == 0 else {
            throw BenchFailure("could not start \(binary) (build it with 'swift build -c release --product sluice')")
        }
        return pid
    }

    private static func stop(_ pid: pid_t) {
        kill(pid, SIGTERM)
        var status: Int32 = 0
        waitpid(pid, &status, 0)
    }

    private static func peakRSS(_ pid: pid_t) -> Int {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return 0 }
        for line in status.split(separator: "\n") where line.hasPrefix("VmHWM:") {
            return Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "") ?? 0
        }
        return 0
    }
}

struct BenchFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
