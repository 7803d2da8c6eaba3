import Foundation

/// Programs the benchmark starts: the real `sluice` binary, `wrk`, `pgbench`.
enum ChildProcess {
    /// Starts `binary` with `arguments`, this process's environment plus `environment`, and its output to
    /// `outputPath` (or inherited).
    static func spawn(
        _ binary: String, _ arguments: [String], environment: [String: String] = [:], outputPath: String? = nil
    ) throws -> pid_t {
        let merged = ProcessInfo.processInfo.environment.merging(environment) { _, new in new }
        let argv = ([binary] + arguments).map { strdup($0) } + [nil]
        let envp = merged.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            argv.forEach { free($0) }
            envp.forEach { free($0) }
        }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        if let outputPath {
            posix_spawn_file_actions_addopen(&actions, 1, outputPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
            posix_spawn_file_actions_adddup2(&actions, 1, 2)
        }
        var pid: pid_t = 0
        let result = posix_spawnp(&pid, binary, &actions, nil, argv, envp)
        guard result == 0 else {
            throw BenchFailure("could not start \(binary): \(String(cString: strerror(result)))")
        }
        return pid
    }

    /// Runs a program to its end and returns its output (stdout and stderr) and exit status.
    static func run(_ binary: String, _ arguments: [String], environment: [String: String] = [:]) throws -> (
        output: String, status: Int32
    ) {
        let outputPath = NSTemporaryDirectory() + "sluice-bench-\(UInt32.random(in: 0...UInt32.max)).out"
        defer { try? FileManager.default.removeItem(atPath: outputPath) }
        let pid = try spawn(binary, arguments, environment: environment, outputPath: outputPath)
        let status = wait(pid)
        return ((try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? "", status)
    }

    static func stop(_ pid: pid_t) {
        kill(pid, SIGTERM)
        _ = wait(pid)
    }

    /// The exit status, or 128 + the signal that ended it.
    static func wait(_ pid: pid_t) -> Int32 {
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0, errno == EINTR {}
        return status & 0x7f == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
    }

    /// The peak resident set size of a running process (VmHWM), in KiB.
    static func peakRSSKiB(_ pid: pid_t) -> Int {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return 0 }
        for line in status.split(separator: "\n") where line.hasPrefix("VmHWM:") {
            return Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "") ?? 0
        }
        return 0
    }
}
