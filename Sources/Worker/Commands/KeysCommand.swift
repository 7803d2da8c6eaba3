import ArgumentParser
import Foundation
import PGQueue

/// `sluice keys`: the services' keys to the app's API.
struct KeysCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keys",
        abstract: "Create, list and revoke the keys other services call the app's API with.",
        discussion: """
            A key is printed once, when it is made; the database keeps only its SHA-256 (sluice.api_keys).
            Scopes: access:read (a user's access), usage:write (record usage), billing:write (act on Stripe).
            """,
        subcommands: [Create.self, List.self, Revoke.self]
    )

    struct Create: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Make a key and print it, once.")

        @Option(help: "Who uses it, for lists and logs.") var name: String
        @Option(help: "Comma-separated: access:read, usage:write, billing:write.") var scopes: String
        @OptionGroup var database: DatabaseOptions

        func validate() throws {
            if name.isEmpty || name.count > 200 { throw ValidationError("--name takes 1 to 200 characters") }
            if case .failure(let error) = ServiceKey.parseScopes(scopes) { throw ValidationError("\(error)") }
        }

        func run() throws {
            let scopes = try ServiceKey.parseScopes(scopes).get()
            let connection = try database.connect()
            let key = ServiceKey.generate()
            let id = try reportingDatabaseErrors { () throws(PostgresError) in
                try ServiceKeyStore(connection: connection).create(key, name: name, scopes: scopes)
            }
            print(key.secret)
            FileHandle.standardError.write(
                Data(
                    "key \(id) (\(key.prefix)…) for \(name): \(scopes.joined(separator: ",")); it is not shown again\n"
                        .utf8))
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the keys (never the keys themselves).")

        @OptionGroup var database: DatabaseOptions

        func run() throws {
            let connection = try database.connect()
            let entries = try reportingDatabaseErrors { () throws(PostgresError) in
                try ServiceKeyStore(connection: connection).list()
            }
            var table = TextTable(["id", "name", "prefix", "scopes", "created", "last used", "revoked"])
            for entry in entries {
                table.add([
                    "\(entry.id)", entry.name, entry.prefix, entry.scopes.joined(separator: ","),
                    entry.createdAt.formatted(.iso8601), entry.lastUsedAt?.formatted(.iso8601) ?? "-",
                    entry.revokedAt?.formatted(.iso8601) ?? "-",
                ])
            }
            print(table.render(), terminator: "")
        }
    }

    struct Revoke: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Revoke a key at once.")

        @Argument(help: "The key's id (sluice keys list).") var id: Int64
        @OptionGroup var database: DatabaseOptions

        func run() throws {
            let connection = try database.connect()
            let revoked = try reportingDatabaseErrors { () throws(PostgresError) in
                try ServiceKeyStore(connection: connection).revoke(id: id)
            }
            guard revoked else { throw CommandFailure("no live key \(id); sluice keys list shows them") }
            print("key \(id) revoked")
        }
    }
}
