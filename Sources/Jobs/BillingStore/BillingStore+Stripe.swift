public import Foundation
public import PGQueue

extension BillingStore {
    /// A metered use not reported to Stripe yet, with what the meter event needs.
    public struct UnreportedUse: Sendable, Hashable {
        public var idempotencyKey: String
        public var quantity: Int64
        /// Unix seconds.
        public var recordedAt: Int64
        /// The Stripe meter's `event_name` (`billing.meters`).
        public var eventName: String
        public var customerID: String
    }

    /// The subscription that gives the user access, else the user's latest one.
    public func subscription(ofUser user: String) throws(PostgresError) -> String? {
        try connection.query(
            """
            SELECT coalesce(a.subscription_id,
                            (SELECT s.id FROM billing.customer_links l JOIN billing.subscriptions s ON s.customer_id = l.customer_id
                             WHERE l.user_id = $1 ORDER BY s.version DESC NULLS LAST LIMIT 1))
            FROM billing.access_of($1) a
            """, [user], context: "finding the subscription of \(user)"
        ).single().decode(String?.self, at: 0)
    }

    /// The user's current Stripe customer, unless Stripe deleted it (a checkout then makes a new one).
    public func customer(ofUser user: String) throws(PostgresError) -> String? {
        try connection.query(
            """
            SELECT l.customer_id FROM billing.customer_links l
            WHERE l.user_id = $1 AND l.unlinked_at IS NULL
              AND NOT EXISTS (SELECT 1 FROM billing.customers c WHERE c.id = l.customer_id AND c.deleted_at IS NOT NULL)
            """, [user], context: "finding the customer of \(user)"
        ).first?.decode(String.self, at: 0)
    }

    /// When the subscription's current period ends, if known.
    public func currentPeriodEnd(ofSubscription subscription: String) throws(PostgresError) -> Date? {
        try connection.query(
            "SELECT current_period_end FROM billing.subscriptions WHERE id = $1", [subscription],
            context: "reading the period end of \(subscription)"
        ).first?.decode(Date?.self, at: 0)
    }

    /// Allowed uses of metered features not reported yet and not refused by Stripe, oldest first.
    public func unreportedUses(limit: Int) throws(PostgresError) -> [UnreportedUse] {
        try connection.query(
            """
            SELECT e.idempotency_key, e.quantity, extract(epoch FROM e.recorded_at)::bigint, m.event_name, l.customer_id
            FROM billing.usage_events e
            JOIN billing.meters m ON m.feature = e.feature
            JOIN billing.customer_links l ON l.user_id = e.user_id AND l.unlinked_at IS NULL
            WHERE e.reported_at IS NULL AND e.allowed AND e.report_error IS NULL
            ORDER BY e.recorded_at
            LIMIT $1
            """, [limit], context: "finding unreported usage"
        ).map { row throws(PostgresError) in
            UnreportedUse(
                idempotencyKey: try row.decode(String.self, at: 0), quantity: try row.decode(Int64.self, at: 1),
                recordedAt: try row.decode(Int64.self, at: 2), eventName: try row.decode(String.self, at: 3),
                customerID: try row.decode(String.self, at: 4))
        }
    }

    /// Marks a use reported: Stripe accepted its meter event.
    public func markReported(_ idempotencyKey: String) throws(PostgresError) {
        try connection.query(
            "UPDATE billing.usage_events SET reported_at = now() WHERE idempotency_key = $1", [idempotencyKey],
            context: "marking usage reported")
    }

    /// Keeps why Stripe refused a use's meter event; it is skipped until an operator clears the reason.
    public func markReportRefused(_ idempotencyKey: String, reason: String) throws(PostgresError) {
        try connection.query(
            "UPDATE billing.usage_events SET report_error = $2 WHERE idempotency_key = $1", [idempotencyKey, reason],
            context: "recording a refused usage report")
    }
}
