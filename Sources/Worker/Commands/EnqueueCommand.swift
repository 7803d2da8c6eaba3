import ArgumentParser
import Foundation
import PGQueue

/// `sluice enqueue`: adds one job and prints its id.
struct EnqueueCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "enqueue",
        abstract: "Add a job and print its id.",
        discussion: """
            Example: sluice enqueue sluice.noop --payload '{"sleep_ms": 100}'
            With --unique-key, while a job with that key waits or runs (or completed within the retention
            period), the existing job's id is printed instead and nothing is added. Other services enqueue
            with one SQL call instead: SELECT sluice.enqueue('kind', '{...}'::jsonb).
            """
    )

    @Argument(help: "The job kind, for example sluice.noop.")
    var kind: String

    @Option(help: "The payload, a JSON object.")
    var payload: String = "{}"

    @Option(help: "The queue.")
    var queue: String = "default"

    @Option(help: "Lower runs first.")
    var priority: Int = 0

    @Option(name: .customLong("in"), help: "Seconds to wait before the job may run.")
    var delay: Double?

    @Option(help: "Attempts before the job goes to the dead letters (default: the kind's, else 20).")
    var maxAttempts: Int?

    @Option(help: "Deduplication key.")
    var uniqueKey: String?

    @OptionGroup var database: DatabaseOptions

    func validate() throws {
        guard let object = try? JSONSerialization.jsonObject(with: Data(payload.utf8)), object is [String: Any] else {
            throw ValidationError("--payload must be a JSON object, such as '{}' or '{\"sleep_ms\": 100}'")
        }
        if let delay, delay < 0 { throw ValidationError("--in must be zero or more seconds") }
        if let maxAttempts, maxAttempts < 1 { throw ValidationError("--max-attempts must be at least 1") }
    }

    func run() throws {
        let connection = try database.connect()
        let job = NewJob(
            kind: kind, payload: payload, queue: queue, priority: priority,
            runAt: delay.map { Date().addingTimeInterval($0) }, maxAttempts: maxAttempts, uniqueKey: uniqueKey)
        let id = try reportingDatabaseErrors { () throws(PostgresError) in try JobQueue().enqueue(job, on: connection) }
        print(id)
    }
}
