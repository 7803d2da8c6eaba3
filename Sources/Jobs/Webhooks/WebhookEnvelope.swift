import Foundation

/// The two fields the receiver reads from a verified body, for routing and deduplication; the handlers
/// read the rest from the job's copy of the raw body.
public struct WebhookEnvelope: Sendable {
    /// Stripe's event id (`evt_…`); Clerk's bodies carry none, the `svix-id` header stands in.
    public var id: String?
    public var type: String

    /// An id is part of the unique key; Stripe's are about 30 characters.
    public static let maxIDLength = 255

    /// Reads `{"type": "…"}` (and `"id"` when `requiresID`) from the body.
    public static func parse(_ body: [UInt8], requiresID: Bool) throws(WebhookRejection) -> WebhookEnvelope {
        guard !body.isEmpty else { throw .malformed("body is empty; expected a JSON event object") }
        // The body is kept as a JSON string in the job, which needs valid UTF-8.
        // A NUL byte is never valid JSON, and PostgreSQL cannot store it in a JSON string.
        guard !body.contains(0), String(validating: body, as: UTF8.self) != nil else {
            throw .malformed("body is not UTF-8 text; expected a JSON event object")
        }
        let fields: Fields
        do {
            fields = try JSONDecoder().decode(Fields.self, from: Data(body))
        } catch {
            throw .malformed("body is not a JSON object with string fields \(requiresID ? "id and type" : "type")")
        }
        guard let type = fields.type, !type.isEmpty else { throw .malformed("body has no \"type\"") }
        if requiresID {
            guard let id = fields.id, !id.isEmpty else { throw .malformed("body has no \"id\"") }
            guard id.utf8.count <= maxIDLength else { throw .malformed("\"id\" is longer than \(maxIDLength) bytes") }
        }
        return WebhookEnvelope(id: fields.id, type: type)
    }

    private struct Fields: Decodable {
        var id: String?
        var type: String?

        init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: Key.self)
            // Clerk's bodies have no top-level id; a non-string one is only an error where the id is needed.
            id = try? container.decodeIfPresent(String.self, forKey: .id)
            type = try container.decodeIfPresent(String.self, forKey: .type)
        }

        enum Key: String, CodingKey {
            case id, type
        }
    }
}
