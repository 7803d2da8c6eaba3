public import Foundation
public import PGQueue

extension BillingStore {
    /// Whether a user has access now, on which plan, and why (`billing.access_of`).
    public struct Access: Sendable, Hashable {
        public var hasAccess: Bool
        public var plan: String
        public var reason: String
        /// The subscription that gives access, if one does.
        public var subscriptionID: String?
    }

    /// What `billing.record_usage` answered.
    public struct UsageAnswer: Sendable, Hashable {
        public var allowed: Bool
        public var used: Int64
        /// nil: unlimited.
        public var limit: Int64?
        /// nil: unlimited.
        public var remaining: Int64?
        public var plan: String
        public var periodEnd: Date?
        /// The idempotency key was used before: this is the first call's answer, counted once.
        public var repeated: Bool
    }

    /// One feature a user's plan grants, with this period's use (`billing.entitlements`).
    public struct Entitlement: Sendable, Hashable {
        public var feature: String
        /// nil: unlimited.
        public var limit: Int64?
        public var used: Int64
        /// nil: unlimited.
        public var remaining: Int64?
        public var periodEnd: Date?
    }

    public func access(of user: String) throws(PostgresError) -> Access {
        let row = try connection.query(
            "SELECT has_access, plan, reason, subscription_id FROM billing.access_of($1)", [user],
            context: "reading the access of \(user)"
        ).single()
        return Access(
            hasAccess: try row.decode(Bool.self, at: 0), plan: try row.decode(String.self, at: 1),
            reason: try row.decode(String.self, at: 2), subscriptionID: try row.decode(String?.self, at: 3))
    }

    /// Records one use against the user's plan limit, once per idempotency key.
    public func recordUsage(user: String, feature: String, quantity: Int64, idempotencyKey: String)
        throws(PostgresError) -> UsageAnswer
    {
        let row = try connection.query(
            """
            SELECT allowed, used, limit_value, remaining, plan, period_end, repeated
            FROM billing.record_usage($1, $2, $3, $4)
            """, [user, feature, quantity, idempotencyKey], context: "recording usage"
        ).single()
        return UsageAnswer(
            allowed: try row.decode(Bool.self, at: 0), used: try row.decode(Int64.self, at: 1),
            limit: try row.decode(Int64?.self, at: 2), remaining: try row.decode(Int64?.self, at: 3),
            plan: try row.decode(String.self, at: 4), periodEnd: try row.decode(Date?.self, at: 5),
            repeated: try row.decode(Bool.self, at: 6))
    }

    private static let recordUsagePayload = PreparedStatement(
        name: "billing_usage_record",
        sql: """
            SELECT allowed, used
            FROM billing.record_usage(billing.text_at($1::jsonb, '{user_id}', true),
                                      billing.text_at($1::jsonb, '{feature}', true),
                                      billing.bigint_at($1::jsonb, '{quantity}', true),
                                      coalesce(billing.text_at($1::jsonb, '{idempotency_key}'), $2))
            """)

    /// Records the use a `usage.record` job's payload describes; `fallbackKey` stands in for a missing
    /// `idempotency_key`. A missing or wrong-typed field is a data exception naming it.
    public func recordUsage(payload: String, fallbackKey: String) throws(PostgresError) -> (allowed: Bool, used: Int64)
    {
        let row = try connection.execute(Self.recordUsagePayload, [payload, fallbackKey], context: "recording usage")
            .single()
        return (try row.decode(Bool.self, at: 0), try row.decode(Int64.self, at: 1))
    }

    /// Every feature the user's plan grants, by name.
    public func entitlements(of user: String) throws(PostgresError) -> [Entitlement] {
        try connection.query(
            """
            SELECT feature, limit_value, used, remaining, period_end
            FROM billing.entitlements WHERE user_id = $1 ORDER BY feature
            """, [user], context: "reading the entitlements of \(user)"
        ).map { row throws(PostgresError) in
            Entitlement(
                feature: try row.decode(String.self, at: 0), limit: try row.decode(Int64?.self, at: 1),
                used: try row.decode(Int64.self, at: 2), remaining: try row.decode(Int64?.self, at: 3),
                periodEnd: try row.decode(Date?.self, at: 4))
        }
    }

    /// The body of `GET /v1/me` and `GET /v1/users/{user_id}/access`, as JSON (`billing.api_access`).
    public func apiAccess(of user: String) throws(PostgresError) -> String {
        try connection.query("SELECT billing.api_access($1)::text", [user], context: "reading the access of \(user)")
            .single().decode(String.self, at: 0)
    }

    /// The body of `GET /v1/me/invoices`, as JSON (`billing.api_invoices`): at most `limit`, newest first.
    public func apiInvoices(of user: String, limit: Int) throws(PostgresError) -> String {
        try connection.query(
            "SELECT billing.api_invoices($1, $2)::text", [user, limit], context: "reading the invoices of \(user)"
        ).single().decode(String.self, at: 0)
    }

    /// `access.changed` for users whose access ran out with time (`billing.emit_due_access_changes`); returns
    /// how many events it emitted.
    public func emitDueAccessChanges() throws(PostgresError) -> Int {
        try connection.query("SELECT billing.emit_due_access_changes()", context: "emitting access that ran out")
            .single().decode(Int.self, at: 0)
    }

    /// Whether a signed-in user may choose `price` (`billing.price_on_sale`): an active, recurring price the
    /// model knows from Stripe's events.
    public func isOnSale(price: String) throws(PostgresError) -> Bool {
        try connection.query("SELECT billing.price_on_sale($1)", [price], context: "checking price \(price)")
            .single().decode(Bool.self, at: 0)
    }
}
