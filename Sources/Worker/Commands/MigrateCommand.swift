import ArgumentParser
import PGQueue

/// `sluice migrate`: applies schema.sql.
struct MigrateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "migrate",
        abstract: "Create or upgrade the database schema (the schema.sql this binary was built with).",
        discussion: """
            Safe to run again and while other Sluice processes run: everything is created only if missing, an
            older schema is upgraded in place without losing jobs, and concurrent runs take turns. Equivalent
            to 'psql -v ON_ERROR_STOP=1 -f schema.sql'.
            """
    )

    @OptionGroup var database: DatabaseOptions

    func run() throws {
        let connection = try database.connect()
        let before = try reportingDatabaseErrors { () throws(PostgresError) in
            try Schema.installedVersion(on: connection)
        }
        try reportingDatabaseErrors { () throws(PostgresError) in try Schema.apply(on: connection) }
        switch before {
        case nil: print("schema created at version \(Schema.version)")
        case let version? where version < Schema.version:
            print("schema upgraded from version \(version) to \(Schema.version)")
        default: print("schema is current (version \(Schema.version))")
        }
    }
}
