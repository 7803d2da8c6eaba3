import ArgumentParser
import Foundation
import PGQueue

/// `sluice dead`: the dead-letter queue.
struct DeadCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dead",
        abstract: "List, show, retry or discard jobs that failed for good.",
        discussion: """
            A job lands here when it fails on its last attempt, fails permanently, or its worker dies on its
            last attempt. Retrying puts it back under the same id with its attempts reset. The same
            operations in SQL: sluice.retry_dead(id), sluice.retry_dead_kind(kind), sluice.discard_dead(id).
            """,
        subcommands: [List.self, Show.self, Retry.self, Discard.self]
    )

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List dead letters, newest first.")

        @Option(help: "Only this kind.")
        var kind: String?

        @Option(help: "At most this many.")
        var limit: Int = 50

        @OptionGroup var database: DatabaseOptions

        func run() throws {
            let connection = try database.connect()
            let letters = try reportingDatabaseErrors { () throws(PostgresError) in
                try JobQueue().deadLetters(kind: kind, limit: limit, on: connection)
            }
            guard !letters.isEmpty else {
                print(kind.map { "no dead letters of kind \($0)" } ?? "no dead letters")
                return
            }
            var table = TextTable(["id", "kind", "queue", "attempts", "reason", "died", "last error"])
            for letter in letters {
                table.add([
                    "\(letter.id)", letter.kind, letter.queue, "\(letter.attempt)/\(letter.maxAttempts)", letter.reason,
                    letter.diedAt.formatted(.iso8601), String(lastError(letter.errors).prefix(80)),
                ])
            }
            print(table.render(), terminator: "")
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show one dead letter with its payload and every error.")

        @Argument(help: "The dead letter's id (the job's id).")
        var id: Int64

        @OptionGroup var database: DatabaseOptions

        func run() throws {
            let connection = try database.connect()
            let found = try reportingDatabaseErrors { () throws(PostgresError) in
                try JobQueue().deadLetter(id: id, on: connection)
            }
            guard let letter = found else {
                throw CommandFailure("no dead letter with id \(id); 'sluice dead list' shows them")
            }
            print("id:        \(letter.id)")
            print("kind:      \(letter.kind)")
            print("queue:     \(letter.queue)")
            print("attempts:  \(letter.attempt) of \(letter.maxAttempts)")
            print("reason:    \(letter.reason)")
            print("unique:    \(letter.uniqueKey ?? "-")")
            print("created:   \(letter.createdAt.formatted(.iso8601))")
            print("died:      \(letter.diedAt.formatted(.iso8601))")
            print("payload:   \(letter.payload)")
            print("errors:")
            for entry in errorEntries(letter.errors) { print("  \(entry)") }
        }
    }

    struct Retry: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Put dead letters back in their queue, by id or every one of a kind.")

        @Argument(help: "Dead letter ids.")
        var ids: [Int64] = []

        @Option(help: "Retry every dead letter of this kind.")
        var kind: String?

        @OptionGroup var database: DatabaseOptions

        func validate() throws {
            guard ids.isEmpty != (kind == nil) else {
                throw ValidationError("give dead letter ids or --kind, not both and not neither")
            }
        }

        func run() throws {
            let connection = try database.connect()
            let queue = JobQueue()
            if let kind {
                let count = try reportingDatabaseErrors { () throws(PostgresError) in
                    try queue.retryDead(kind: kind, on: connection)
                }
                print("\(count) dead letters of kind \(kind) back in their queues")
                return
            }
            var failed = false
            for id in ids {
                do {
                    try queue.retryDead(id: id, on: connection)
                    print("\(id): back in its queue")
                } catch {
                    failed = true
                    FileHandle.standardError.write(Data("\(id): \(error.message)\n".utf8))
                }
            }
            if failed { throw ExitCode.failure }
        }
    }

    struct Discard: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete dead letters for good.")

        @Argument(help: "Dead letter ids.")
        var ids: [Int64]

        @OptionGroup var database: DatabaseOptions

        func run() throws {
            let connection = try database.connect()
            var missing = false
            for id in ids {
                let deleted = try reportingDatabaseErrors { () throws(PostgresError) in
                    try JobQueue().discardDead(id: id, on: connection)
                }
                if deleted {
                    print("\(id): discarded")
                } else {
                    missing = true
                    FileHandle.standardError.write(Data("\(id): no such dead letter\n".utf8))
                }
            }
            if missing { throw ExitCode.failure }
        }
    }
}

/// The error history entries as readable lines.
private func errorEntries(_ json: String) -> [String] {
    guard let entries = try? JSONSerialization.jsonObject(with: Data(json.utf8)) as? [[String: Any]] else {
        return [json]
    }
    return entries.map { entry in
        let attempt = entry["attempt"].map { "\($0)" } ?? "?"
        let at = entry["at"].map { "\($0)" } ?? "?"
        let kind = entry["kind"].map { "\($0)" } ?? "error"
        let message = entry["error"].map { "\($0)" } ?? ""
        return "attempt \(attempt) at \(at) [\(kind)]: \(message)"
    }
}

private func lastError(_ json: String) -> String {
    errorEntries(json).last.map { line in
        line.range(of: "]: ").map { String(line[$0.upperBound...]) } ?? line
    } ?? ""
}
