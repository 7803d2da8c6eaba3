public import Foundation

/// The job payload of a delivery: what the handler needs, and what re-verifying or replaying it needs.
///
/// `{"source", "event_id", "type", "received_at", "headers": {name: value}, "body": "<raw body>"}`. The
/// body is kept byte for byte as a JSON string, so `convert_to(...)` or `payload ->> 'body'` gives back
/// exactly the bytes that were signed.
public enum WebhookJobPayload {
    private static let timestampStyle = Date.ISO8601FormatStyle(includingFractionalSeconds: true)

    public static func make(
        source: WebhookSource, eventID: String, type: String, receivedAt: Date,
        headers: [(name: String, value: String)], body: [UInt8]
    ) -> String {
        var json: [UInt8] = []
        json.reserveCapacity(body.count + body.count / 8 + 512)
        json.append(contentsOf: #"{"source":"#.utf8)
        appendString(source.name.utf8, to: &json)
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

    /// The raw body and signature headers of a stored delivery, or nil when the payload holds none (it
    /// did not come through the receiver).
    static func storedDelivery(_ payload: String) -> (body: [UInt8], headers: [String: String])? {
        guard let stored = try? JSONDecoder().decode(Stored.self, from: Data(payload.utf8)) else { return nil }
        return (Array(stored.body.utf8), stored.headers)
    }

    private struct Stored: Decodable {
        var body: String
        var headers: [String: String]
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
