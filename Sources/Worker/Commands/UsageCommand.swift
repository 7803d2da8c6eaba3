import ArgumentParser
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
            let row = try reportingDatabaseErrors { () throws(PostgresError) in
                try connection.query(
                    """
                    SELECT allowed, used, limit_value::text, remaining::text, plan, period_end::text, repeated
                    FROM billing.record_usage($1, $2, $3, $4)
                    """, [user, feature, quantity, key], context: "recording usage"
                ).single()
            }
            let allowed = try row.decode(Bool.self, at: 0)
            let limit = try row.decode(String?.self, at: 2) ?? "unlimited"
            let remaining = try row.decode(String?.self, at: 3) ?? "unlimited"
            print(
                "\(allowed ? "allowed" : "denied")\(try row.decode(Bool.self, at: 6) ? " (repeated key)" : ""): "
                    + "used \(try row.decode(Int64.self, at: 1)) of \(limit), \(remaining) remaining, plan "
                    + "\(try row.decode(String.self, at: 4)), period ends \(try row.decode(String.self, at: 5))")
            if !allowed { throw ExitCode(2) }
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show a user's access and entitlements (billing.user_access, billing.entitlements).")

        @Argument(help: "The Clerk user id.") var user: String
        @OptionGroup var database: DatabaseOptions

        func run() throws {
            let connection = try database.connect()
            let access = try reportingDatabaseErrors { () throws(PostgresError) in
                try connection.query(
                    "SELECT has_access, plan, reason FROM billing.access_of($1)", [user], context: "reading access"
                ).single()
            }
            print(
                "\(user): \(try access.decode(Bool.self, at: 0) ? "has access" : "no access"), plan "
                    + "\(try access.decode(String.self, at: 1)) (\(try access.decode(String.self, at: 2)))")
            let rows = try reportingDatabaseErrors { () throws(PostgresError) in
                try connection.query(
                    """
                    SELECT feature, coalesce(limit_value::text, 'unlimited'), used::text,
                           coalesce(remaining::text, 'unlimited'), period_end::text
                    FROM billing.entitlements WHERE user_id = $1 ORDER BY feature
                    """, [user], context: "reading entitlements")
            }
            var table = TextTable(["feature", "limit", "used", "remaining", "period ends"])
            for row in rows { table.add(try (0..<5).map { try row.decode(String.self, at: $0) }) }
            print(table.render(), terminator: "")
        }
    }
}
