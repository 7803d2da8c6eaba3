public import PGQueue

/// The billing model (schema `billing`, see schema.sql) as Swift sees it: the one place in Swift that
/// names its tables, views and functions, so a change to them has one place to follow.
///
/// Every method is one statement on `connection`, inside whatever transaction the caller holds; none
/// opens a transaction of its own, so a job can make several calls and complete in one commit.
public struct BillingStore {
    public let connection: PostgresConnection

    public init(_ connection: PostgresConnection) {
        self.connection = connection
    }

    // MARK: Events

    private static let applyStripePayload = PreparedStatement(
        name: "billing_apply_stripe_event",
        sql: "SELECT billing.apply_stripe_event(\(eventOfPayload("$1")), $2::text)")

    private static let applyClerkPayload = PreparedStatement(
        name: "billing_apply_clerk_event",
        sql: "SELECT billing.apply_clerk_event(\(eventOfPayload("$1")), billing.text_at($1::jsonb, '{event_id}', true))"
    )

    /// The event in a job payload: the raw body the receiver kept, or the payload itself (an event an
    /// operator enqueued by hand).
    private static func eventOfPayload(_ parameter: String) -> String {
        """
        CASE WHEN jsonb_typeof(\(parameter)::jsonb -> 'body') = 'string'
             THEN (\(parameter)::jsonb ->> 'body')::jsonb ELSE \(parameter)::jsonb END
        """
    }

    /// Applies the Stripe event in a `stripe.event` or `stripe.fetched_event` job's payload.
    /// - Parameter mode: `live` or `test` to record an event of the other mode without applying it.
    /// - Returns: the outcome `billing.apply_stripe_event` recorded (`applied`, `older`, `future:<s>`, …).
    public func applyStripeEvent(payload: String, mode: String?) throws(PostgresError) -> String {
        try connection.execute(Self.applyStripePayload, [payload, mode], context: "applying a Stripe event")
            .single().decode(String.self, at: 0)
    }

    /// Applies the Clerk event in a `clerk.event` job's payload; its `event_id` (the svix-id) names it.
    public func applyClerkEvent(payload: String) throws(PostgresError) -> String {
        try connection.execute(Self.applyClerkPayload, [payload], context: "applying a Clerk event")
            .single().decode(String.self, at: 0)
    }

    /// Applies a Stripe event built from an object Sluice fetched or Stripe's API returned.
    public func applyStripeEvent(_ event: String) throws(PostgresError) {
        try connection.query(
            "SELECT billing.apply_stripe_event($1::jsonb)", [event], context: "applying a Stripe object")
    }

    /// Which of these Stripe event ids are already processed.
    public func processedStripeEvents(among ids: [String]) throws(PostgresError) -> Set<String> {
        Set(
            try connection.query(
                "SELECT event_id FROM billing.processed_events WHERE source = 'stripe' AND event_id = ANY($1::text[])",
                [ids], context: "finding processed events"
            ).map { row throws(PostgresError) in try row.decode(String.self, at: 0) })
    }

    // MARK: Settings

    /// A value of `billing.settings`.
    public func setting(_ key: String) throws(PostgresError) -> String? {
        try connection.query("SELECT value FROM billing.settings WHERE key = $1", [key], context: "reading \(key)")
            .first?.decode(String.self, at: 0)
    }

    /// Sets a value of `billing.settings`, describing it when it is new.
    public func setSetting(_ key: String, to value: String, description: String) throws(PostgresError) {
        try connection.query(
            """
            INSERT INTO billing.settings (key, value, description) VALUES ($1, $2, $3)
            ON CONFLICT (key) DO UPDATE SET value = excluded.value
            """, [key, value, description], context: "storing \(key)")
    }

    // MARK: Housekeeping

    /// One batch of `billing.prune`, by the retentions in `billing.settings`: at most `batchSize` rows from
    /// each table that grows with traffic.
    /// - Returns: how many rows left each table, by its qualified name.
    public func prune(batchSize: Int = 1000) throws(PostgresError) -> [String: Int] {
        try JobQueue.prunedCounts(
            connection.query(
                "SELECT table_name, pruned FROM billing.prune($1)", [batchSize], context: "pruning the billing tables"))
    }
}
