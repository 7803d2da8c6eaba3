import ArgumentParser
import Foundation
import Jobs
import PGQueue

/// `sluice endpoints`: where business events go (DESIGN.md section 10).
struct EndpointsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "endpoints",
        abstract: "Add, list, disable, enable and rotate the secret of the app's webhook endpoints.",
        discussion: """
            Each endpoint gets every business event (or those of --events), signed as Standard Webhooks says
            with its whsec_ secret, which add and rotate-secret print once. SLUICE_NOTIFY_URL and
            SLUICE_NOTIFY_SECRET keep one more endpoint from the environment.
            """,
        subcommands: [Add.self, List.self, Disable.self, Enable.self, RotateSecret.self]
    )

    /// The types an endpoint may filter on (README "Outbound events").
    static let eventTypes: Set<String> = [
        "subscription.activated", "subscription.updated", "subscription.canceled", "subscription.past_due",
        "payment.failed", "payment.recovered", "trial.will_end", "access.changed", "usage.threshold",
        "dispute.created",
    ]

    /// An endpoint URL: https, or http on a loopback address; no user or password.
    static func checkURL(_ text: String) -> String? {
        guard text.utf8.count <= 2048, let url = URLComponents(string: text), let host = url.host, !host.isEmpty,
            let scheme = url.scheme?.lowercased()
        else { return "\"\(text.prefix(80))\" is not an absolute URL" }
        guard url.user == nil, url.password == nil else { return "an endpoint URL carries no user or password" }
        guard scheme == "https" || (scheme == "http" && LoopbackHost.contains(host)) else {
            return "an endpoint URL must be https (http only on localhost), got \(scheme)"
        }
        return nil
    }

    struct Add: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Add an endpoint and print its secret, once.")

        @Argument(help: "The https URL to POST events to.") var url: String
        @Option(help: "Comma-separated event types to send (default: all).") var events: String?
        @OptionGroup var database: DatabaseOptions

        func validate() throws {
            if let problem = EndpointsCommand.checkURL(url) { throw ValidationError(problem) }
            let unknown = types.filter { !EndpointsCommand.eventTypes.contains($0) }
            if !unknown.isEmpty {
                throw ValidationError(
                    "unknown event types \(unknown.joined(separator: ", ")); known: "
                        + EndpointsCommand.eventTypes.sorted().joined(separator: ", "))
            }
        }

        private var types: [String] {
            (events ?? "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        }

        func run() throws {
            let connection = try database.connect()
            let secret = OutboundSigner.newSecret()
            let filter = types.isEmpty ? nil : types
            let id = try reportingDatabaseErrors { () throws(PostgresError) in
                try OutboundStore(connection).add(url: url, secret: secret, eventTypes: filter)
            }
            print(secret)
            FileHandle.standardError.write(
                Data(
                    "endpoint \(id): \(url), \(filter?.joined(separator: ",") ?? "every event"); its secret is not shown again\n"
                        .utf8))
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the endpoints and their health (no secrets).")

        @OptionGroup var database: DatabaseOptions

        func run() throws {
            let connection = try database.connect()
            let endpoints = try reportingDatabaseErrors { () throws(PostgresError) in
                try OutboundStore(connection).endpoints()
            }
            var table = TextTable(["id", "url", "events", "enabled", "last success", "failing since", "note"])
            for endpoint in endpoints {
                table.add([
                    "\(endpoint.id)", endpoint.url, endpoint.eventTypes?.joined(separator: ",") ?? "all",
                    endpoint.enabled ? "yes" : "no", endpoint.lastSuccessAt?.formatted(.iso8601) ?? "-",
                    endpoint.failingSince?.formatted(.iso8601) ?? "-",
                    [
                        endpoint.fromEnvironment ? "SLUICE_NOTIFY_URL" : nil, endpoint.disabledReason,
                        endpoint.secrets.count > 1 ? "two secrets sign" : nil, endpoint.lastError,
                    ].compactMap { $0 }.joined(separator: "; "),
                ])
            }
            print(table.render(), terminator: "")
        }
    }

    struct Disable: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Stop sending to an endpoint.")

        @Argument(help: "The endpoint's id (sluice endpoints list).") var id: Int64
        @OptionGroup var database: DatabaseOptions

        func run() throws {
            let connection = try database.connect()
            let done = try reportingDatabaseErrors { () throws(PostgresError) in
                try OutboundStore(connection).disable(endpoint: id, reason: "disabled by an operator")
            }
            guard done else { throw CommandFailure("no enabled endpoint \(id); sluice endpoints list shows them") }
            print("endpoint \(id) disabled; deliveries queued for it end without a request")
        }
    }

    struct Enable: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Send to a disabled endpoint again (events since are not resent: sluice events replay).")

        @Argument(help: "The endpoint's id (sluice endpoints list).") var id: Int64
        @OptionGroup var database: DatabaseOptions

        func run() throws {
            let connection = try database.connect()
            let done = try reportingDatabaseErrors { () throws(PostgresError) in
                try OutboundStore(connection).enable(endpoint: id)
            }
            guard done else { throw CommandFailure("no disabled endpoint \(id); sluice endpoints list shows them") }
            print("endpoint \(id) enabled")
        }
    }

    struct RotateSecret: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "rotate-secret",
            abstract: "Give an endpoint a new secret and print it; the old one keeps signing beside it for 24 hours.")

        @Argument(help: "The endpoint's id (sluice endpoints list).") var id: Int64
        @OptionGroup var database: DatabaseOptions

        func run() throws {
            let connection = try database.connect()
            let secret = OutboundSigner.newSecret()
            let done = try reportingDatabaseErrors { () throws(PostgresError) in
                try OutboundStore(connection).rotateSecret(endpoint: id, to: secret)
            }
            guard done else { throw CommandFailure("no endpoint \(id); sluice endpoints list shows them") }
            print(secret)
            FileHandle.standardError.write(
                Data("endpoint \(id): both secrets sign for 24 hours; move the app to the new one\n".utf8))
        }
    }
}
