import ArgumentParser
import Foundation
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

    /// Each billing view as a table; the columns are cast to text in SQL, so one printer serves them all.
    private func printBusinessSummary(_ connection: PostgresConnection) throws {
        let sections: [(title: String, columns: [String], sql: String)] = [
            (
                "Monthly recurring revenue (minor units)", ["plan", "currency", "subscriptions", "mrr"],
                "SELECT plan, currency, subscriptions::text, mrr::text FROM billing.mrr"
            ),
            (
                "Active subscriptions", ["plan", "status", "subscriptions"],
                "SELECT plan, status, subscriptions::text FROM billing.active_subscriptions"
            ),
            (
                "New and churned, last 6 months", ["month", "new", "churned", "net"],
                """
                SELECT to_char(month, 'YYYY-MM'), new::text, churned::text, net::text FROM billing.subscription_movements
                WHERE month >= date_trunc('month', now(), 'UTC') - interval '5 months'
                """
            ),
            (
                "Failed payments, last 6 months", ["month", "failed", "recovered", "open", "lost", "recovery rate"],
                """
                SELECT to_char(month, 'YYYY-MM'), failed::text, recovered::text, still_open::text, lost::text,
                       recovery_rate::text
                FROM billing.payment_recovery WHERE month >= date_trunc('month', now(), 'UTC') - interval '5 months'
                """
            ),
            (
                "Top usage this period", ["feature", "rank", "user", "used"],
                "SELECT feature, rank::text, user_id, used::text FROM billing.top_usage WHERE rank <= 3"
            ),
        ]
        let hasBilling = try reportingDatabaseErrors { () throws(PostgresError) in
            try connection.query("SELECT to_regclass('billing.mrr') IS NOT NULL", context: "looking for billing")
                .single().decode(Bool.self, at: 0)
        }
        guard hasBilling else { return }
        for section in sections {
            let rows = try reportingDatabaseErrors { () throws(PostgresError) in
                try connection.query(section.sql, context: "reading \(section.title.lowercased())")
            }
            print("\n\(section.title)")
            guard !rows.isEmpty else {
                print("  none")
                continue
            }
            var table = TextTable(section.columns)
            for row in rows {
                table.add(try section.columns.indices.map { try row.decode(String?.self, at: $0) ?? "-" })
            }
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
