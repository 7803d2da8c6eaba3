import ArgumentParser
import Foundation
import Jobs
import PGQueue

/// `sluice stats`: `sluice.queue_stats` as a table.
struct StatsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stats",
        abstract: "Show each queue, then a summary of the business: revenue, subscriptions, payments, usage.",
        discussion: """
            The queues come from sluice.queue_stats; the summary from the billing views billing.mrr,
            billing.active_subscriptions, billing.subscription_movements, billing.payment_recovery and
            billing.top_usage, which psql reads the same way.
            """
    )

    @OptionGroup var database: DatabaseOptions

    func run() throws {
        let connection = try database.connect()
        let stats = try reportingDatabaseErrors { () throws(PostgresError) in try JobQueue().stats(on: connection) }
        if stats.isEmpty {
            print("no queues: nothing waiting, running or dead")
        } else {
            var table = TextTable(["queue", "paused", "available", "scheduled", "running", "dead", "oldest wait"])
            for row in stats {
                table.add([
                    row.queue, row.paused ? "yes" : "no", "\(row.available)", "\(row.scheduled)", "\(row.running)",
                    "\(row.dead)", row.oldestAvailableAge.map(formatAge) ?? "-",
                ])
            }
            print(table.render(), terminator: "")
        }
        try printBusinessSummary(connection)
    }

    /// Each billing view as a table.
    private func printBusinessSummary(_ connection: PostgresConnection) throws {
        let reports = try reportingDatabaseErrors { () throws(PostgresError) in
            try BillingStore(connection).businessSummary()
        }
        for report in reports ?? [] {
            print("\n\(report.title)")
            guard !report.rows.isEmpty else {
                print("  none")
                continue
            }
            var table = TextTable(report.columns)
            for row in report.rows { table.add(row) }
            print(table.render(), terminator: "")
        }
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
