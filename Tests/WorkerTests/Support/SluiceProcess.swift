import Foundation
import TestKit

/// The real `sluice` binary, started as a child process for a fault test; killed if still running when the
/// value goes away. Its log goes to a file that failures print.
final class SluiceProcess: Sendable {
    let child: ChildProcess
    let logPath: String

    /// The binary built beside the test bundle (`swift build --build-tests` builds both).
    static let binary: URL = {
        let beside = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
            .appendingPathComponent("sluice")
        if FileManager.default.isExecutableFile(atPath: beside.path) { return beside }
        return Repository.url(".build/debug/sluice")
    }()

    /// Starts `sluice <arguments>` with a short lease, test jobs on, periodic jobs off (a test that counts
    /// jobs sees only its own), the admin server off and the receiver (if any) on a free port, plus
    /// `environment`.
    init(_ arguments: [String] = ["work"], databaseURL: String, environment: [String: String] = [:]) throws {
        logPath = NSTemporaryDirectory() + "sluice-test-\(UInt32.random(in: 0...UInt32.max)).log"
        var env = ProcessInfo.processInfo.environment
        env.removeValue(forKey: "NOTIFY_SOCKET")
        env["DATABASE_URL"] = databaseURL
        env["SLUICE_LEASE_SECONDS"] = "2"
        env["SLUICE_ADMIN_LISTEN"] = "off"
        env["SLUICE_LISTEN"] = "127.0.0.1:0"
        env["SLUICE_TEST_JOBS"] = "1"
        env["SLUICE_POLL_SECONDS"] = "0.5"
        env["SLUICE_LOG_LEVEL"] = "info"
        env["SLUICE_PERIODIC"] = "off"
        env.merge(environment) { _, new in new }
        child = try ChildProcess(path: Self.binary.path, arguments: arguments, environment: env, outputPath: logPath)
    }

    deinit {
        if child.isRunning {
            kill(child.pid, SIGCONT)
            kill(child.pid, SIGKILL)
        }
        _ = child.wait(timeout: 10)
    }

    var pid: Int32 { child.pid }
    var isRunning: Bool { child.isRunning }

    func signal(_ number: Int32) {
        kill(child.pid, number)
    }

    /// Waits for the process to exit; returns its status, or nil if it still runs after `timeout` seconds.
    func waitForExit(timeout: Double) -> Int32? {
        child.wait(timeout: timeout)
    }

    var log: String {
        (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
    }

    /// The port a server of this process logged that it listens on ("Admin server", "Webhook receiver").
    func listeningPort(_ server: String) -> Int? {
        let log = log
        guard let range = log.range(of: "\(server) listening address=127.0.0.1:") else { return nil }
        return Int(log[range.upperBound...].prefix { $0.isNumber })
    }
}

/// The lines a log budget skipped, summed over its summary lines (`… lines skipped … log.skipped=N`).
func skippedLines(_ summaries: [Substring]) -> Int {
    summaries.compactMap { line in line.firstMatch(of: /log.skipped=(\d+)/).flatMap { Int($0.1) } }.reduce(0, +)
}
