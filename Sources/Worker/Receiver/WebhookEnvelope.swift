import Foundation
import Jobs

/// The two fields the receiver reads from a verified body, for routing and deduplication; the handlers
/// read the rest from the job's copy of the raw body.
struct WebhookEnvelope: Sendable {
    /// Stripe's event id (`evt_…`); Clerk's bodies carry none, the `svix-id` header stands in.
    var id: String?
    var type: String

    /// An id is part of the unique key; Stripe's are about 30 characters.
    static let maxIDLength = 255

    /// Reads `{"type": "…"}` (and `"id"` when `requiresID`) from the body.
    static func parse(_ body: [UInt8], requiresID: Bool) throws(WebhookRejection) -> WebhookEnvelope {
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

/// The job payload of a delivery: what the handler needs, and what re-verifying or replaying it needs.
///
/// `{"source", "event_id", "type", "received_at", "headers": {name: value}, "body": "<raw body>"}`. The
/// body is kept byte for byte as a JSON string, so `convert_to(...)` or `payload ->> 'body'` gives back
/// exactly the bytes that were signed.
enum WebhookJobPayload {
    private static let timestampStyle = Date.ISO8601FormatStyle(includingFractionalSeconds: true)

    static func make(
        source: WebhookSource, eventID: String, type: String, receivedAt: Date,
        headers: [(name: String, value: String)], body: [UInt8]
    ) -> String {
        var json: [UInt8] = []
        json.reserveCapacity(body.count + body.count / 8 + 512)
        json.append(contentsOf: #"{"source":"#.utf8)
        appendString(source.rawValue.utf8, to: &json)
        json.append(contentsOf: #","event_id":"#.utf8)
        appendString(eventID.utf8, to: &json)
        json.append(contentsOf: #","type":"#.utf8)
        appendString(type.utf8, to: &json)
        json.append(contentsOf: #","received_at":"#.utf8)
        appendString(timestampStyle.format(receivedAt).utf8, to: &json)
        json.append(contentsOf: #","headers":{"#.utf8)
        for (index, header) in headers.enumerated() {
            if index > 0 { json.append(UInt8(ascii: ",")) }
            appendString(header.name.lowercased().utf8, to: &json)
            json.append(UInt8(ascii: ":"))
            appendString(header.value.utf8, to: &json)
        }
        json.append(contentsOf: #"},"body":"#.utf8)
        appendString(body, to: &json)
        json.append(UInt8(ascii: "}"))
        return String(decoding: json, as: UTF8.self)
    }

    /// Appends `bytes` (valid UTF-8) as a JSON string literal.
    private static func appendString(_ bytes: some Sequence<UInt8>, to json: inout [UInt8]) {
        let hex: [UInt8] = Array("0123456789abcdef".utf8)
        json.append(UInt8(ascii: "\""))
        for byte in bytes {
            switch byte {
            case UInt8(ascii: "\""): json.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "\"")])
            case UInt8(ascii: "\\"): json.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "\\")])
            case UInt8(ascii: "\n"): json.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "n")])
            case UInt8(ascii: "\r"): json.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "r")])
            case UInt8(ascii: "\t"): json.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "t")])
            case 0..<0x20:
                json.append(contentsOf: Array(#"\u00"#.utf8))
                json.append(hex[Int(byte >> 4)])
                json.append(hex[Int(byte & 0x0f)])
            default: json.append(byte)
            }
        }
        json.append(UInt8(ascii: "\""))
    }
}
