import Foundation
import Jobs
import PGQueue
import TestKit

/// A PostgreSQL cluster of the test's own, for tests that stop or restart the server or create roles (which
/// are cluster-wide); the rest use a ``TestDatabase``. Started with scripts/postgres.sh, so that stopping or
/// restarting it disturbs no other test. Stopped and deleted when the value goes away.
final class Cluster: DatabaseUnderTest {
    let directory: String
    let url: String

    init() throws {
        directory = NSTemporaryDirectory() + "sluice-fault-\(UInt32.random(in: 0...UInt32.max))"
        url = try Self.script(["start", directory]).trimmingCharacters(in: .whitespacesAndNewlines)
        let connection = try PostgresConnection(connectionString: url)
        try SluiceSchema.script.apply(on: connection)
        try connection.run(script: TestSchema.marksTable, context: "creating the marks table")
    }

    deinit {
        _ = try? Self.script(["stop", directory])
    }

    /// Restarts the server, cutting every connection.
    func restart() throws {
        _ = try Self.script(["restart", directory])
    }

    /// Stops the server but keeps its data: an outage, until ``resume()``.
    func pause() throws {
        _ = try Self.script(["pause", directory])
    }

    /// Starts a paused server again, on the same port.
    func resume() throws {
        _ = try Self.script(["resume", directory])
    }

    private static func script(_ arguments: [String]) throws -> String {
        let outputPath = NSTemporaryDirectory() + "sluice-script-\(UInt32.random(in: 0...UInt32.max)).out"
        defer { try? FileManager.default.removeItem(atPath: outputPath) }
        let child = try ChildProcess(
            path: "/bin/bash",
            arguments: [Repository.url("scripts/postgres.sh").path] + arguments,
            environment: ProcessInfo.processInfo.environment, outputPath: outputPath)
        let status = child.wait(timeout: 120)
        let output = (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? ""
        guard status == 0 else {
            throw ScriptFailure(description: "postgres.sh \(arguments.joined(separator: " ")) failed: \(output)")
        }
        // 'start' prints the URL as its last line; anything before it is the server's chatter.
        return output.split(separator: "\n").last.map(String.init) ?? ""
    }
}
