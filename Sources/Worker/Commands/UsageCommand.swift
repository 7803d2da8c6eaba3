import ArgumentParser
import Foundation
import Jobs
import PGQueue

/// `sluice usage`: record a use, or show a user's entitlements.
struct UsageCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "usage",
        abstract: "Record feature usage against plan limits, or show what a user may still use.",
        discussion: """
            Services call SELECT * FROM billing.record_usage(user, feature, quantity, idempotency_key) directly,
            or enqueue a usage.record job; these commands are for operators and scripts.
            """,
        subcommands: [Record.self, Show.self]
    )

    struct Record: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Record a use if the user's plan allows it, and print the answer.",
            discussion: "A repeated --key prints the first answer and counts nothing. Exit status 2 when denied."
        )

        @Argument(help: "The Clerk user id.") var user: String
        @Argument(help: "The feature, as in billing.plan_limits.") var feature: String
        @Argument(help: "Units to use, at least 1.") var quantity: Int
        @Option(help: "Idempotency key: the same key is counted once.") var key: String
        @OptionGroup var database: DatabaseOptions

        func validate() throws {
            if quantity < 1 { throw ValidationError("quantity must be at least 1") }
        }

        func run() throws {
            let connection = try database.connect()
            let answer = try reportingDatabaseErrors { () throws(PostgresError) in
                try BillingStore(connection).recordUsage(
                    user: user, feature: feature, quantity: Int64(quantity), idempotencyKey: key)
            }
            print(
                "\(answer.allowed ? "allowed" : "denied")\(answer.repeated ? " (repeated key)" : ""): "
                    + "used \(answer.used) of \(answer.limit.map(String.init) ?? "unlimited"), "
                    + "\(answer.remaining.map(String.init) ?? "unlimited") remaining, plan \(answer.plan), "
                    + "period ends \(answer.periodEnd.map(formatDate) ?? "-")")
            if !answer.allowed { throw ExitCode(2) }
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show a user's access and entitlements (billing.user_access, billing.entitlements).")

        @Argument(help: "The Clerk user id.") var user: String
        @OptionGroup var database: DatabaseOptions

        func run() throws {
            let connection = try database.connect()
            let store = BillingStore(connection)
            let (access, entitlements) = try reportingDatabaseErrors { () throws(PostgresError) in
                (try store.access(of: user), try store.entitlements(of: user))
            }
            print("\(user): \(access.hasAccess ? "has access" : "no access"), plan \(access.plan) (\(access.reason))")
            var table = TextTable(["feature", "limit", "used", "remaining", "period ends"])
            for entitlement in entitlements {
                table.add([
                    entitlement.feature, entitlement.limit.map(String.init) ?? "unlimited", "\(entitlement.used)",
                    entitlement.remaining.map(String.init) ?? "unlimited", entitlement.periodEnd.map(formatDate) ?? "-",
                ])
            }
            print(table.render(), terminator: "")
        }
    }
}

/// A time as operators read it: ISO 8601, in UTC.
private func formatDate(_ date: Date) -> String {
    date.formatted(.iso8601)
}
