import Foundation
import Synchronization

/// A child process started with posix_spawn and reaped with waitpid.
///
/// Foundation's `Process` learns of a child's exit through a SIGCHLD dispatch source that did not always
/// fire inside the test runner here (a test hung on `waitUntilExit` with its child already a zombie), so
/// fault tests spawn and reap their children themselves.
final class ChildProcess: Sendable {
    let pid: pid_t
    private let status = Mutex<Int32?>(nil)

    /// Starts `path` with `arguments`, `environment`, stdin from /dev/null and stdout and stderr to `outputPath`.
    init(path: String, arguments: [String], environment: [String: String], outputPath: String) throws {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, outputPath, O_WRONLY | O_CREAT | O_APPEND, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        let argv = ([path] + arguments).map { strdup($0) } + [nil]
        let envp = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            argv.forEach { free($0) }
            envp.forEach { free($0) }
        }
        var child: pid_t = 0
        let result = posix_spawn(&child, path, &actions, nil, argv, envp)
        guard result == 0 else {
            throw ScriptFailure(description: "could not start \(path): \(String(cString: strerror(result)))")
        }
        pid = child
    }

    /// The exit status (or 128 + signal), or nil while the child runs.
    var exitStatus: Int32? {
        status.withLock { status in
            if let status { return status }
            var raw: Int32 = 0
            guard waitpid(pid, &raw, WNOHANG) == pid else { return nil }
            let signal = raw & 0x7f
            status = signal == 0 ? (raw >> 8) & 0xff : 128 + signal
            return status
        }
    }

    var isRunning: Bool { exitStatus == nil }

    /// Waits up to `timeout` seconds; returns the exit status, or nil if the child still runs.
    func wait(timeout: Double) -> Int32? {
        let deadline = Date(timeIntervalSinceNow: timeout)
        while Date() < deadline {
            if let status = exitStatus { return status }
            usleep(20_000)
        }
        return exitStatus
    }
}
