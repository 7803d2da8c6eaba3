import ArgumentParser
import Foundation
import Jobs
import PGQueue

/// `sluice migrate`: applies schema.sql, checks whether that is due, or shows what it would do.
struct MigrateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "migrate",
        abstract: "Create or upgrade the database schema (the schema.sql this binary was built with).",
        discussion: """
            Safe to run again and while other Sluice processes run: everything is created only if missing, a
            database made by any earlier release is upgraded in place without losing a row, in one transaction,
            and concurrent runs take turns. Workers of the previous release keep working until restarted, as
            long as the new schema still serves them (see 'Upgrading' in the README). Equivalent to
            'psql -v ON_ERROR_STOP=1 -f schema.sql'.

            --check exits 0 when the database is current (or newer and still serving this release), 1 when an
            upgrade is due, and 3 when the database no longer serves this release; it changes nothing.
            --dry-run runs the upgrade, prints its steps and rolls it back.
            """
    )

    @OptionGroup var database: DatabaseOptions

    @Flag(help: "Print both versions and exit 1 if an upgrade is due; change nothing.")
    var check = false

    @Flag(help: "Print the upgrade steps and roll them back.")
    var dryRun = false

    func validate() throws {
        if check && dryRun {
            throw ValidationError("--check and --dry-run are alternatives: pass one")
        }
    }

    func run() throws {
        let connection = try database.connect()
        let script = SluiceSchema.script
        let installed = try reportingDatabaseErrors { () throws(PostgresError) in
            try InstalledSchema.read(on: connection)
        }
        if check {
            try report(installed, build: script.version)
            return
        }
        if dryRun {
            let steps = try reportingDatabaseErrors { () throws(PostgresError) in try script.dryRun(on: connection) }
            print("dry run: \(describe(installed)) -> version \(script.version); rolled back, nothing applied")
            print(steps.isEmpty ? "no upgrade steps" : steps.map { "  \($0)" }.joined(separator: "\n"))
            return
        }
        let steps = try reportingDatabaseErrors { () throws(PostgresError) in try script.apply(on: connection) }
        switch installed?.version {
        case nil: print("schema created at version \(script.version)")
        case let version? where version < script.version:
            print("schema upgraded from version \(version) to \(script.version)")
        default: print("schema is current (version \(script.version))")
        }
        for step in steps { print("  \(step)") }
    }

    private func report(_ installed: InstalledSchema?, build: Int) throws {
        guard let installed else {
            print("database: no schema; this release: version \(build); an upgrade is due: run 'sluice migrate'")
            throw ExitCode(1)
        }
        let compatibility = installed.compatibility(withBuild: build)
        print("database: version \(installed.version); this release: version \(build); \(compatibility)")
        switch compatibility {
        case .current, .served: return
        case .upgradeDue: throw ExitCode(1)
        case .releaseTooOld: throw ExitCode(3)
        }
    }

    private func describe(_ installed: InstalledSchema?) -> String {
        installed.map { "version \($0.version)" } ?? "no schema"
    }
}
