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

    /// The business figures `/metrics` shows (`sluice_business_*`), from the analytics views.
    public struct BusinessGauges: Sendable {
        /// Monthly recurring revenue by currency, in the currency's minor unit (cents).
        public var mrr: [(currency: String, amount: Int64)]
        public var subscriptionsByStatus: [(status: String, count: Int64)]
        public var pastDue: Int64
        /// `invoice.payment_failed` events applied in the past hour.
        public var paymentFailuresLastHour: Int64
    }

    /// The business figures; one process publishes them at a time (``holdBusinessGaugeLock()``).
    public func businessGauges() throws(PostgresError) -> BusinessGauges {
        let mrr = try connection.query(
            "SELECT coalesce(currency, '-'), coalesce(sum(mrr), 0)::bigint FROM billing.mrr GROUP BY 1 ORDER BY 1",
            context: "reading MRR"
        ).map { row throws(PostgresError) in (try row.decode(String.self, at: 0), try row.decode(Int64.self, at: 1)) }
        let statuses = try connection.query(
            "SELECT coalesce(status, '-'), count(*) FROM billing.subscriptions GROUP BY 1 ORDER BY 1",
            context: "counting subscriptions"
        ).map { row throws(PostgresError) in (try row.decode(String.self, at: 0), try row.decode(Int64.self, at: 1)) }
        let failures = try connection.query(
            "SELECT count(*) FROM billing.processed_events WHERE source = 'stripe' "
                + "AND type = 'invoice.payment_failed' AND processed_at > now() - interval '1 hour'",
            context: "counting payment failures"
        ).single().decode(Int64.self, at: 0)
        return BusinessGauges(
            mrr: mrr, subscriptionsByStatus: statuses,
            pastDue: statuses.first { $0.0 == "past_due" }?.1 ?? 0, paymentFailuresLastHour: failures)
    }

    /// Whether this connection holds the lock that makes its process the one publishing the business
    /// gauges; takes it when free. The lock lives as long as the connection, so a process that dies hands
    /// it to the next that asks.
    public func holdBusinessGaugeLock() throws(PostgresError) -> Bool {
        try connection.query(
            "SELECT pg_try_advisory_lock(hashtext('sluice.business_gauges'))", context: "taking the gauge lock"
        ).single().decode(Bool.self, at: 0)
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
