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
    private static func appendString(_ bytes: some Collection<UInt8>, to json: inout [UInt8]) {
        json.append(UInt8(ascii: "\""))
        let copied: Void? = bytes.withContiguousStorageIfAvailable { appendEscaped($0, to: &json) }
        if copied == nil { Array(bytes).withUnsafeBufferPointer { appendEscaped($0, to: &json) } }
        json.append(UInt8(ascii: "\""))
    }

    /// Copies runs that need no escape whole: a body is mostly such runs between its own quotes.
    private static func appendEscaped(_ bytes: UnsafeBufferPointer<UInt8>, to json: inout [UInt8]) {
        var runStart = 0
        for (index, byte) in bytes.enumerated()
        where byte < 0x20 || byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") {
            json.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[runStart..<index]))
            runStart = index + 1
            json.append(UInt8(ascii: "\\"))
            switch byte {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"): json.append(byte)
            case UInt8(ascii: "\n"): json.append(UInt8(ascii: "n"))
            case UInt8(ascii: "\r"): json.append(UInt8(ascii: "r"))
            case UInt8(ascii: "\t"): json.append(UInt8(ascii: "t"))
            default:
                json.append(contentsOf: "u00".utf8)
                json.append(hexDigits[Int(byte >> 4)])
                json.append(hexDigits[Int(byte & 0x0f)])
            }
        }
        json.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[runStart...]))
    }

    private static let hexDigits: [UInt8] = Array("0123456789abcdef".utf8)
}
