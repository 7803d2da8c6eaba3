public import PGQueue

extension BillingStore {
    /// One table of the business summary, its cells as text.
    public struct Report: Sendable {
        public var title: String
        public var columns: [String]
        public var rows: [[String]]
    }

    /// The analytics views (`billing.mrr`, `billing.active_subscriptions`, `billing.subscription_movements`,
    /// `billing.payment_recovery`, `billing.top_usage`) as tables; nil when the database has no billing
    /// schema. A NULL cell reads "-".
    public func businessSummary() throws(PostgresError) -> [Report]? {
        let hasBilling = try connection.query(
            "SELECT to_regclass('billing.mrr') IS NOT NULL", context: "looking for billing"
        ).single().decode(Bool.self, at: 0)
        guard hasBilling else { return nil }
        return try Self.summarySections.map { section throws(PostgresError) in
            let rows = try connection.query(section.sql, context: "reading \(section.title.lowercased())")
            return Report(
                title: section.title, columns: section.columns,
                rows: try rows.map { row throws(PostgresError) in
                    try section.columns.indices.map { index throws(PostgresError) in
                        try row.decode(String?.self, at: index) ?? "-"
                    }
                })
        }
    }

    /// Each view's columns are cast to text in SQL, so one reader serves them all.
    private static let summarySections: [(title: String, columns: [String], sql: String)] = [
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
}
