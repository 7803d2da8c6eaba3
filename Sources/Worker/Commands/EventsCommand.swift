import ArgumentParser
import Foundation
import Jobs
import PGQueue

/// `sluice events`: the business events sent to the app, and sending them again.
struct EventsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "events",
        abstract: "List the business events sent to the app, and send some again.",
        subcommands: [List.self, Replay.self]
    )

    /// `2026-12-01T10:00:00Z`, or a duration back from now (`2h`, `30m`, `1d`).
    static func time(_ text: String) -> Date? {
        if let date = try? Date(text, strategy: .iso8601) { return date }
        guard let unit = text.last, let amount = Double(text.dropLast()), amount >= 0 else { return nil }
        let seconds: Double? = ["s": 1, "m": 60, "h": 3600, "d": 86_400][unit]
        return seconds.map { Date().addingTimeInterval(-amount * $0) }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List events, newest first.")

        @Option(help: "Only events since this time (ISO 8601, or 2h, 1d back).") var since: String?
        @Option(help: "Only events of this type.") var type: String?
        @Option(help: "At most this many.") var limit = 50
        @Flag(help: "Print each event's body too.") var bodies = false
        @OptionGroup var database: DatabaseOptions

        func validate() throws {
            if let since, EventsCommand.time(since) == nil {
                throw ValidationError("--since takes an ISO 8601 time or a duration such as 2h, got \(since)")
            }
            if !(1...10_000).contains(limit) { throw ValidationError("--limit is 1 to 10000") }
        }

        func run() throws {
            let connection = try database.connect()
            let events = try reportingDatabaseErrors { () throws(PostgresError) in
                try OutboundStore(connection).events(since: since.flatMap(EventsCommand.time), type: type, limit: limit)
            }
            var table = TextTable(bodies ? ["id", "type", "occurred", "body"] : ["id", "type", "occurred"])
            for event in events {
                table.add(
                    [event.id, event.type, event.occurredAt.formatted(.iso8601)] + (bodies ? [event.body] : []))
            }
            print(table.render(), terminator: "")
        }
    }

    struct Replay: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Send events again to every enabled endpoint that takes them (same ids: receivers dedupe).")

        @Argument(help: "Event ids (evt_…).") var ids: [String] = []
        @Option(help: "Every event since this time (ISO 8601, or 2h, 1d back).") var since: String?
        @OptionGroup var database: DatabaseOptions

        func validate() throws {
            if ids.isEmpty == (since == nil) { throw ValidationError("give event ids or --since, not both") }
            if let since, EventsCommand.time(since) == nil {
                throw ValidationError("--since takes an ISO 8601 time or a duration such as 2h, got \(since)")
            }
        }

        func run() throws {
            let connection = try database.connect()
            let queued = try reportingDatabaseErrors { () throws(PostgresError) in
                let store = OutboundStore(connection)
                let chosen =
                    ids.isEmpty
                    // Oldest first, as they happened.
                    ? try store.events(since: since.flatMap(EventsCommand.time), type: nil, limit: 1_000_000).map(\.id)
                        .reversed()
                    : ids
                return try store.replay(events: chosen)
            }
            print("\(queued) deliveries queued")
        }
    }
}
