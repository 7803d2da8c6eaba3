import ArgumentParser
import Foundation
import Jobs
import PGQueue

/// `sluice erasures`: the list of erased users, to apply again after a restore.
struct ErasuresCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "erasures",
        abstract: "Export the list of erased users, or apply one again after restoring a backup.",
        discussion: """
            A Clerk user.deleted erases the user's email and names and lists the user (id and the deletion's
            version, no personal data) in billing.erasures; the clerk.event job also logs 'User erased' with
            user.id and erasure.version. A backup taken before an erasure brings the data back when restored,
            so after a restore apply every erasure made since the backup:

              journalctl -u sluice -o cat --since '<backup time>' | sluice erasures apply
              sluice erasures apply erasures.txt     # from 'sluice erasures export' on the lost database

            Applying is safe to repeat: an erasure already listed changes nothing.
            """,
        subcommands: [Export.self, Apply.self]
    )

    struct Export: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print every erasure, one 'USER_ID VERSION' a line, oldest first.")

        @OptionGroup var database: DatabaseOptions

        func run() throws {
            let connection = try database.connect()
            let entries = try reportingDatabaseErrors { () throws(PostgresError) in
                try ErasureList.export(on: connection)
            }
            print(ErasureList.render(entries), terminator: "")
        }
    }

    struct Apply: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Erase again every user in a list ('USER_ID VERSION' lines, or sluice's journal lines).")

        @Argument(help: "The list; '-' or none reads standard input.")
        var file: String?

        @OptionGroup var database: DatabaseOptions

        func run() throws {
            let text: String
            if let file, file != "-" {
                do {
                    text = try String(contentsOfFile: file, encoding: .utf8)
                } catch {
                    throw CommandFailure("cannot read \(file): \(error.localizedDescription)")
                }
            } else {
                text = String(decoding: FileHandle.standardInput.readDataToEndOfFile(), as: UTF8.self)
            }
            let entries: [ErasureList.Entry]
            do {
                entries = try ErasureList.parse(text)
            } catch {
                throw CommandFailure("\(file ?? "standard input"): \(error); nothing was applied")
            }
            let connection = try database.connect()
            let erased: Int
            do {
                erased = try ErasureList.apply(entries, on: connection)
            } catch let error as PostgresError {
                throw CommandFailure("\(error); nothing was applied")
            }
            print("\(entries.count) erasures read; \(erased) applied now, \(entries.count - erased) already applied")
        }
    }
}
