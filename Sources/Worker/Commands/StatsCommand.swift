import ArgumentParser
import Foundation
import PGQueue

/// `sluice stats`: `sluice.queue_stats` as a table.
struct StatsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stats",
        abstract: "Show each queue: paused, available, scheduled, running, dead, and the oldest wait.",
        discussion: "The same figures as SELECT * FROM sluice.queue_stats."
    )

    @OptionGroup var database: DatabaseOptions

    func run() throws {
        let connection = try database.connect()
        let stats = try reportingDatabaseErrors { () throws(PostgresError) in try JobQueue().stats(on: connection) }
        guard !stats.isEmpty else {
            print("no queues: nothing waiting, running or dead")
            return
        }
        var table = TextTable(["queue", "paused", "available", "scheduled", "running", "dead", "oldest wait"])
        for row in stats {
            table.add([
                row.queue, row.paused ? "yes" : "no", "\(row.available)", "\(row.scheduled)", "\(row.running)",
                "\(row.dead)", row.oldestAvailableAge.map(formatAge) ?? "-",
            ])
        }
        print(table.render(), terminator: "")
    }
}

/// "4.2s", "3m12s", "2h05m", "3d04h".
func formatAge(_ seconds: Double) -> String {
    let whole = Int(seconds)
    switch whole {
    case ..<60: return String(format: "%.1fs", seconds)
    case ..<3600: return "\(whole / 60)m\(String(format: "%02d", whole % 60))s"
    case ..<86_400: return "\(whole / 3600)h\(String(format: "%02d", whole % 3600 / 60))m"
    default: return "\(whole / 86_400)d\(String(format: "%02d", whole % 86_400 / 3600))h"
    }
}

/// Left-aligned columns separated by two spaces.
struct TextTable {
    private var rows: [[String]]

    init(_ header: [String]) { rows = [header] }

    mutating func add(_ row: [String]) { rows.append(row) }

    func render() -> String {
        let widths = rows[0].indices.map { column in rows.map { $0[column].count }.max() ?? 0 }
        return rows.map { row in
            row.enumerated().map { column, cell in
                column == row.count - 1 ? cell : cell.padding(toLength: widths[column], withPad: " ", startingAt: 0)
            }.joined(separator: "  ")
        }.joined(separator: "\n") + "\n"
    }
}
