public import Foundation
public import PGQueue

/// `sluice.outbound_endpoints` and `sluice.outbound_events`: where business events go, what was emitted,
/// and the health of each endpoint.
public struct OutboundStore {
    let connection: PostgresConnection

    public init(_ connection: PostgresConnection) {
        self.connection = connection
    }

    /// An endpoint, its secrets included (only the owner reads them).
    public struct Endpoint: Sendable {
        public var id: Int64
        public var url: String
        /// The current secret first, then the previous one while it still signs.
        public var secrets: [String]
        public var eventTypes: [String]?
        public var enabled: Bool
        public var fromEnvironment: Bool
        public var createdAt: Date
        public var lastSuccessAt: Date?
        public var lastFailureAt: Date?
        public var failingSince: Date?
        public var disabledReason: String?
        public var lastError: String?
    }

    /// An emitted event.
    public struct Event: Sendable {
        public var id: String
        public var type: String
        public var occurredAt: Date
        public var body: String
    }

    /// What one delivery sends where.
    public struct Delivery: Sendable {
        public var event: Event
        public var endpoint: Endpoint
    }

    /// The columns ``endpoint(_:)`` reads, of `sluice.outbound_endpoints p`.
    private static let endpointColumns = """
        p.id, p.url, p.secret, CASE WHEN p.previous_secret_until > now() THEN p.previous_secret END,
        array_to_string(p.event_types, ','), p.enabled, p.from_environment, p.created_at, p.last_success_at,
        p.last_failure_at, p.failing_since, p.disabled_reason, p.last_error
        """

    private static func endpoint(_ row: PostgresRow) throws(PostgresError) -> Endpoint {
        let previous = try row.decode(String?.self, at: 3)
        let types = try row.decode(String?.self, at: 4)
        return Endpoint(
            id: try row.decode(Int64.self, at: 0), url: try row.decode(String.self, at: 1),
            secrets: [try row.decode(String.self, at: 2)] + (previous.map { [$0] } ?? []),
            eventTypes: types.map { $0.split(separator: ",").map(String.init) },
            enabled: try row.decode(Bool.self, at: 5), fromEnvironment: try row.decode(Bool.self, at: 6),
            createdAt: try row.decode(Date.self, at: 7), lastSuccessAt: try row.decode(Date?.self, at: 8),
            lastFailureAt: try row.decode(Date?.self, at: 9), failingSince: try row.decode(Date?.self, at: 10),
            disabledReason: try row.decode(String?.self, at: 11), lastError: try row.decode(String?.self, at: 12))
    }

    // MARK: Delivering

    /// The event and endpoint of one `outbound.deliver` job; nil when either is gone (erased, pruned).
    public func delivery(event id: String, endpoint endpointID: Int64) throws(PostgresError) -> Delivery? {
        // One round trip: the endpoint's columns, then the event's.
        guard
            let row = try connection.query(
                """
                SELECT \(Self.endpointColumns), v.id, v.type, v.occurred_at, v.body
                FROM sluice.outbound_endpoints p, sluice.outbound_events v WHERE p.id = $1 AND v.id = $2
                """, [endpointID, id], context: "reading outbound event \(id) for endpoint \(endpointID)"
            ).first
        else { return nil }
        return Delivery(
            event: Event(
                id: try row.decode(String.self, at: 13), type: try row.decode(String.self, at: 14),
                occurredAt: try row.decode(Date.self, at: 15), body: try row.decode(String.self, at: 16)),
            endpoint: try Self.endpoint(row))
    }

    /// A 2xx: the endpoint is healthy again. Written only when that changes something or a minute has passed,
    /// so concurrent deliveries to one endpoint do not queue on its row.
    public func recordSuccess(endpoint id: Int64) throws(PostgresError) {
        try connection.query(
            """
            UPDATE sluice.outbound_endpoints
            SET last_success_at = now(), failing_since = NULL, last_error = NULL
            WHERE id = $1
              AND (failing_since IS NOT NULL OR last_success_at IS NULL OR last_success_at < now() - interval '1 minute')
            """, [id], context: "recording a delivery to endpoint \(id)")
    }

    /// A failed attempt; disables the endpoint when it has failed without a success for longer than
    /// `outbound_disable_after`. Returns whether it did.
    public func recordFailure(endpoint id: Int64, error: String) throws(PostgresError) -> Bool {
        try connection.query(
            """
            WITH too_long AS (
                SELECT sluice.retention(value) AS period
                FROM sluice.settings WHERE key = 'outbound_disable_after'
            )
            UPDATE sluice.outbound_endpoints e
            SET last_failure_at = now(), failing_since = coalesce(e.failing_since, now()), last_error = left($2, 500),
                enabled = e.enabled AND NOT coalesce(e.failing_since < now() - t.period, false),
                disabled_at = CASE WHEN e.enabled AND e.failing_since < now() - t.period THEN now() ELSE e.disabled_at END,
                disabled_reason = CASE WHEN e.enabled AND e.failing_since < now() - t.period
                                       THEN 'failing since ' || e.failing_since::text ELSE e.disabled_reason END
            FROM too_long t
            WHERE e.id = $1
            RETURNING NOT e.enabled AND e.disabled_at = now()
            """, [id, error], context: "recording a failed delivery to endpoint \(id)"
        ).first?.decode(Bool.self, at: 0) ?? false
    }

    /// Stops deliveries to an endpoint (410 Gone, an operator); false when it was already off or is unknown.
    @discardableResult
    public func disable(endpoint id: Int64, reason: String) throws(PostgresError) -> Bool {
        !(try connection.query(
            """
            UPDATE sluice.outbound_endpoints SET enabled = false, disabled_at = now(), disabled_reason = $2
            WHERE id = $1 AND enabled RETURNING id
            """, [id, reason], context: "disabling endpoint \(id)"
        ).isEmpty)
    }

    /// The waits between attempts (`outbound_retry_schedule`), in seconds.
    public func retrySchedule() throws(PostgresError) -> [Double] {
        let text = try connection.query(
            """
            SELECT string_agg(extract(epoch FROM d.value::interval)::text, ',' ORDER BY d.n)
            FROM sluice.settings s, unnest(string_to_array(s.value, ',')) WITH ORDINALITY AS d(value, n)
            WHERE s.key = 'outbound_retry_schedule'
            """, context: "reading outbound_retry_schedule"
        ).single().decode(String?.self, at: 0)
        return (text ?? "").split(separator: ",").compactMap { Double($0) }
    }

    // MARK: Managing

    /// Adds an endpoint; returns its id.
    public func add(url: String, secret: String, eventTypes: [String]?) throws(PostgresError) -> Int64 {
        try connection.query(
            "INSERT INTO sluice.outbound_endpoints (url, secret, event_types) VALUES ($1, $2, $3::text[]) RETURNING id",
            [url, secret, eventTypes], context: "adding an outbound endpoint"
        ).single().decode(Int64.self, at: 0)
    }

    /// Makes the endpoint of `SLUICE_NOTIFY_URL` match it: one row, updated in place, enabled again when its
    /// URL or secret changed.
    public func upsertFromEnvironment(url: String, secret: String) throws(PostgresError) -> Int64 {
        try connection.query(
            """
            WITH changed AS (
                UPDATE sluice.outbound_endpoints
                SET url = $1, secret = $2,
                    enabled = CASE WHEN (url, secret) IS DISTINCT FROM ($1, $2) THEN true ELSE enabled END,
                    disabled_reason = CASE WHEN (url, secret) IS DISTINCT FROM ($1, $2) THEN NULL ELSE disabled_reason END
                WHERE from_environment RETURNING id
            ), added AS (
                INSERT INTO sluice.outbound_endpoints (url, secret, from_environment)
                SELECT $1, $2, true WHERE NOT EXISTS (SELECT 1 FROM changed)
                ON CONFLICT DO NOTHING RETURNING id
            )
            SELECT id FROM changed UNION ALL SELECT id FROM added
            """, [url, secret], context: "keeping the endpoint of SLUICE_NOTIFY_URL"
        ).single().decode(Int64.self, at: 0)
    }

    /// Every endpoint, oldest first.
    public func endpoints() throws(PostgresError) -> [Endpoint] {
        try connection.query(
            "SELECT \(Self.endpointColumns) FROM sluice.outbound_endpoints p ORDER BY p.id",
            context: "listing endpoints"
        ).map { row throws(PostgresError) in try Self.endpoint(row) }
    }

    /// Turns a disabled endpoint back on; false when there is none or it is on.
    public func enable(endpoint id: Int64) throws(PostgresError) -> Bool {
        !(try connection.query(
            """
            UPDATE sluice.outbound_endpoints
            SET enabled = true, disabled_at = NULL, disabled_reason = NULL, failing_since = NULL
            WHERE id = $1 AND NOT enabled RETURNING id
            """, [id], context: "enabling endpoint \(id)"
        ).isEmpty)
    }

    /// A new secret for an endpoint; the old one keeps signing beside it for 24 hours. False when unknown.
    public func rotateSecret(endpoint id: Int64, to secret: String) throws(PostgresError) -> Bool {
        !(try connection.query(
            """
            UPDATE sluice.outbound_endpoints
            SET previous_secret = secret, previous_secret_until = now() + interval '24 hours', secret = $2
            WHERE id = $1 RETURNING id
            """, [id, secret], context: "rotating the secret of endpoint \(id)"
        ).isEmpty)
    }

    /// Emitted events, newest first.
    public func events(since: Date?, type: String?, limit: Int) throws(PostgresError) -> [Event] {
        try connection.query(
            """
            SELECT id, type, occurred_at, body FROM sluice.outbound_events
            WHERE ($1::timestamptz IS NULL OR created_at >= $1) AND ($2::text IS NULL OR type = $2)
            ORDER BY created_at DESC, id LIMIT $3
            """, [since, type, limit], context: "listing outbound events"
        ).map { row throws(PostgresError) in
            Event(
                id: try row.decode(String.self, at: 0), type: try row.decode(String.self, at: 1),
                occurredAt: try row.decode(Date.self, at: 2), body: try row.decode(String.self, at: 3))
        }
    }

    /// Sends events again to every enabled endpoint that takes them; returns the deliveries queued.
    public func replay(events ids: [String]) throws(PostgresError) -> Int {
        try connection.query(
            "SELECT coalesce(sum(sluice.deliver_outbound(id)), 0)::integer FROM unnest($1::text[]) AS id", [ids],
            context: "replaying outbound events"
        ).single().decode(Int.self, at: 0)
    }
}
