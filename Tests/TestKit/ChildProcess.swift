import Foundation
public import Glibc
import Synchronization

/// A child process started with posix_spawn and reaped with waitpid: the `sluice` binary under test,
/// `scripts/postgres.sh`, and the benchmark's `wrk` and `pgbench`.
///
/// Foundation's `Process` learns of a child's exit through a SIGCHLD dispatch source that did not always
/// fire inside the test runner here (a test hung on `waitUntilExit` with its child already a zombie), so
/// tests and benchmarks spawn and reap their children themselves.
public final class ChildProcess: Sendable {
    public let pid: pid_t
    private let status = Mutex<Int32?>(nil)

    /// Starts `path` (looked up in `PATH` when it has no slash) with `arguments` and exactly `environment`,
    /// stdin from /dev/null, and stdout and stderr appended to `outputPath` (inherited when nil).
    public init(path: String, arguments: [String], environment: [String: String], outputPath: String?) throws {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        if let outputPath {
            posix_spawn_file_actions_addopen(&actions, 1, outputPath, O_WRONLY | O_CREAT | O_APPEND, 0o644)
            posix_spawn_file_actions_adddup2(&actions, 1, 2)
        }
        let argv = ([path] + arguments).map { strdup($0) } + [nil]
        let envp = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            argv.forEach { free($0) }
            envp.forEach { free($0) }
        }
        var child: pid_t = 0
        let result = posix_spawnp(&child, path, &actions, nil, argv, envp)
        guard result == 0 else {
            throw ScriptFailure(description: "could not start \(path): \(String(cString: strerror(result)))")
        }
        pid = child
    }

    /// Runs a program to its end, with this process's environment plus `environment`, and returns its
    /// output (stdout and stderr) and exit status.
    public static func run(_ path: String, _ arguments: [String], environment: [String: String] = [:]) throws -> (
        output: String, status: Int32
    ) {
        let outputPath = NSTemporaryDirectory() + "sluice-child-\(UInt32.random(in: 0...UInt32.max)).out"
        defer { try? FileManager.default.removeItem(atPath: outputPath) }
        let child = try ChildProcess(
            path: path, arguments: arguments, environment: inheriting(environment), outputPath: outputPath)
        let status = child.waitForExit()
        return ((try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? "", status)
    }

    /// This process's environment with `overrides` laid over it.
    public static func inheriting(_ overrides: [String: String]) -> [String: String] {
        ProcessInfo.processInfo.environment.merging(overrides) { _, new in new }
    }

    /// The exit status (or 128 + signal), or nil while the child runs.
    public var exitStatus: Int32? {
        status.withLock { status in
            if let status { return status }
            var raw: Int32 = 0
            guard waitpid(pid, &raw, WNOHANG) == pid else { return nil }
            status = Self.exitStatus(raw)
            return status
        }
    }

    public var isRunning: Bool { exitStatus == nil }

    /// Waits up to `timeout` seconds; returns the exit status, or nil if the child still runs.
    public func wait(timeout: Double) -> Int32? {
        let deadline = Date(timeIntervalSinceNow: timeout)
        while Date() < deadline {
            if let status = exitStatus { return status }
            usleep(20_000)
        }
        return exitStatus
    }

    /// Waits for the child to end, however long it takes; returns its exit status.
    public func waitForExit() -> Int32 {
        status.withLock { status in
            if let status { return status }
            var raw: Int32 = 0
            while waitpid(pid, &raw, 0) < 0, errno == EINTR {}
            status = Self.exitStatus(raw)
            return status ?? 0
        }
    }

    /// Sends SIGTERM and waits for the child to end.
    public func stop() {
        kill(pid, SIGTERM)
        _ = waitForExit()
    }

    /// The peak resident set size of the running child (VmHWM), in KiB; 0 once it has ended.
    public var peakRSSKiB: Int {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return 0 }
        for line in status.split(separator: "\n") where line.hasPrefix("VmHWM:") {
            return Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "") ?? 0
        }
        return 0
    }

    /// CPU time the process has used so far, user and system, in seconds (0 when it cannot be read).
    public var cpuSeconds: Double {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        else { return 0 }
        // Fields after the command name, which may hold spaces: utime and stime are the 12th and 13th.
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { return 0 }
        return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    private static func exitStatus(_ raw: Int32) -> Int32 {
        let signal = raw & 0x7f
        return signal == 0 ? (raw >> 8) & 0xff : 128 + signal
    }
}

/// A helper program or script that failed; the description says which and what it printed.
public struct ScriptFailure: Error, CustomStringConvertible {
    public var description: String

    public init(description: String) {
        self.description = description
    }
}
