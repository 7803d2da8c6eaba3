import ArgumentParser
import Foundation
import PGQueue

/// The database flag of the operator commands.
struct DatabaseOptions: ParsableArguments {
    @Option(
        name: .customLong("database-url"),
        help: "libpq URI or conninfo. Env: DATABASE_URL (else libpq's PG* variables).")
    var databaseURL: String?

    /// Opens a connection, or exits with a one-line error that says what to check.
    func connect() throws -> PostgresConnection {
        let url = databaseURL ?? ProcessInfo.processInfo.environment["DATABASE_URL"]
        do {
            return try PostgresConnection(connectionString: url)
        } catch {
            throw CommandFailure("\(error)")
        }
    }
}

/// A command that could not do its work: printed as one line, exit status 1.
struct CommandFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// Runs a database call in a command, turning its error into a one-line ``CommandFailure``.
func reportingDatabaseErrors<Result>(_ body: () throws(PostgresError) -> Result) throws -> Result {
    do {
        return try body()
    } catch {
        throw CommandFailure(error.hint.map { "\(error.description) (\($0))" } ?? error.description)
    }
}
