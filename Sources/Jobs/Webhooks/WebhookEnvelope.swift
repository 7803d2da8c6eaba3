/// The two fields the receiver reads from a verified body, for routing and deduplication; the handlers
/// read the rest from the job's copy of the raw body.
public struct WebhookEnvelope: Sendable {
    /// Stripe's event id (`evt_…`); Clerk's bodies carry none, the `svix-id` header stands in.
    public var id: String?
    public var type: String

    /// An id is part of the unique key; Stripe's are about 30 characters.
    public static let maxIDLength = 255

    /// Reads `{"type": "…"}` (and `"id"` when `requiresID`) from the body, which must be one JSON object.
    public static func parse(_ body: [UInt8], requiresID: Bool) throws(WebhookRejection) -> WebhookEnvelope {
        guard !body.isEmpty else { throw .malformed("body is empty; expected a JSON event object") }
        // The body is kept as a JSON string in the job, which needs valid UTF-8. (A NUL byte, which
        // PostgreSQL cannot store in a JSON string, is never valid JSON: the scan refuses it.)
        guard String(validating: body, as: UTF8.self) != nil else {
            throw .malformed("body is not UTF-8 text; expected a JSON event object")
        }
        guard let fields = EnvelopeScanner.scan(body) else {
            throw .malformed("body is not a JSON object (or names \"id\" or \"type\" twice)")
        }
        let type: String
        switch fields.type {
        case .string(let value) where !value.isEmpty: type = value
        case .notString: throw .malformed("body's \"type\" is not a string")
        default: throw .malformed("body has no \"type\"")
        }
        // A NUL cannot be stored in the job's payload or key; it would fail the whole group commit.
        guard !type.contains("\u{0}") else { throw .malformed("body's \"type\" holds a NUL character") }
        // Clerk's bodies have no top-level id; a non-string one is only an error where the id is needed.
        let id: String? = if case .string(let value) = fields.id { value } else { nil }
        if let id, id.contains("\u{0}") { throw .malformed("body's \"id\" holds a NUL character") }
        if requiresID {
            guard let id, !id.isEmpty else { throw .malformed("body has no \"id\"") }
            guard id.utf8.count <= maxIDLength else { throw .malformed("\"id\" is longer than \(maxIDLength) bytes") }
        }
        return WebhookEnvelope(id: id, type: type)
    }
}
