import Crypto
import Foundation

/// Verifies a Svix-signed delivery (Clerk's webhooks), as Svix's own libraries do, and reads the event's
/// `type`; the `svix-id` header is the event's id (Clerk's bodies carry none).
///
/// Three headers: `svix-id`, `svix-timestamp` (Unix seconds) and `svix-signature`, a space-separated list
/// of `v1,<base64>` entries; the Standard Webhooks names `webhook-id`, `webhook-timestamp` and
/// `webhook-signature` are read when the `svix-` ones are absent. A `v1` is the HMAC-SHA256 of
/// `"<id>.<timestamp>.<raw body>"` keyed with the base64-decoded part of the secret after `whsec_`. Any
/// `v1` matching any configured secret passes; other schemes (`v1a`) are ignored. Timestamps more than
/// five minutes old or ahead are refused, once the signature has proved the delivery genuine.
public struct SvixSignatureVerifier: WebhookVerifier {
    /// The header names of one delivery: Svix's own, or the Standard Webhooks ones.
    public struct HeaderNames: Sendable {
        public var id: String
        public var timestamp: String
        public var signature: String

        public static let svix = HeaderNames(id: "svix-id", timestamp: "svix-timestamp", signature: "svix-signature")
        public static let standard = HeaderNames(
            id: "webhook-id", timestamp: "webhook-timestamp", signature: "webhook-signature")
    }

    public static let toleranceSeconds = 300
    /// Svix message ids are short; a longer one is not a Svix delivery and would bloat the unique key.
    public static let maxMessageIDLength = 255
    /// Svix generates 24-byte (192-bit) secrets; anything shorter is a paste error or a weak key.
    public static let minimumKeyBytes = 24

    private let keyed: [HMAC<SHA256>]

    /// - Parameter secrets: the endpoint's signing secrets, `whsec_` and the base64 of the HMAC key.
    public init(secrets: [String]) throws(WebhookSecretProblem) {
        var keys: [SymmetricKey] = []
        for (index, secret) in secrets.enumerated() {
            guard let key = Self.key(fromSecret: secret) else {
                throw WebhookSecretProblem(
                    index: index,
                    reason: "is not whsec_ followed by the base64 of at least \(Self.minimumKeyBytes) bytes; copy the "
                        + "endpoint's signing secret from the Clerk dashboard again")
            }
            keys.append(key)
        }
        keyed = SignatureMatch.keyed(keys)
    }

    /// The HMAC key in a `whsec_…` secret, or nil when it does not decode to a key long enough.
    private static func key(fromSecret secret: String) -> SymmetricKey? {
        var encoded = secret.hasPrefix("whsec_") ? String(secret.dropFirst("whsec_".count)) : secret
        // Accept the base64 without its trailing padding, as some dashboards copy it.
        if encoded.count % 4 != 0 { encoded += String(repeating: "=", count: 4 - encoded.count % 4) }
        guard let bytes = Data(base64Encoded: encoded), bytes.count >= minimumKeyBytes else { return nil }
        return SymmetricKey(data: bytes)
    }

    public func verify(body: [UInt8], header: (String) -> String?, now: Int?) throws(WebhookRejection)
        -> VerifiedDelivery
    {
        let (id, headers) = try verifySignature(header: header, body: body, now: now)
        let envelope = try WebhookEnvelope.parse(body, requiresID: false)
        return VerifiedDelivery(eventID: id, type: envelope.type, headers: headers)
    }

    /// The message id and the headers to keep, once the signature and the timestamp pass.
    private func verifySignature(header: (String) -> String?, body: [UInt8], now: Int?) throws(WebhookRejection)
        -> (id: String, headers: [(name: String, value: String)])
    {
        let names =
            header(HeaderNames.svix.id) == nil && header(HeaderNames.standard.id) != nil ? .standard : HeaderNames.svix
        guard let id = header(names.id), !id.isEmpty else { throw .badSignature("missing \(names.id) header") }
        guard let timestamp = header(names.timestamp), !timestamp.isEmpty else {
            throw .badSignature("missing \(names.timestamp) header")
        }
        guard let signature = header(names.signature), !signature.isEmpty else {
            throw .badSignature("missing \(names.signature) header")
        }
        guard id.utf8.count <= Self.maxMessageIDLength else {
            throw .badSignature("\(names.id) is longer than \(Self.maxMessageIDLength) bytes")
        }
        guard let seconds = Int(timestamp) else {
            throw .badSignature("\(names.timestamp) is not Unix seconds")
        }
        let candidates = signature.split(separator: " ").compactMap { entry -> Data? in
            guard entry.hasPrefix("v1,") else { return nil }
            return Data(base64Encoded: String(entry.dropFirst(3)))
        }
        guard !candidates.isEmpty else {
            throw .badSignature("\(names.signature) has no v1 signature")
        }
        let signed = Array("\(id).\(timestamp).".utf8)
        guard SignatureMatch.any(keyed: keyed, signed: signed, body: body, candidates: candidates) else {
            throw .badSignature("no v1 signature matches a configured CLERK_WEBHOOK_SECRET")
        }
        let verified = (id, [(names.id, id), (names.timestamp, timestamp), (names.signature, signature)])
        guard let now else { return verified }
        // A signed but absurd timestamp (Int.min) must not trap: an overflowing age is out of range.
        let (age, overflow) = now.subtractingReportingOverflow(seconds)
        guard !overflow, age.magnitude <= UInt(Self.toleranceSeconds) else {
            throw .stale(
                overflow
                    ? "signature timestamp \(seconds) is out of range"
                    : age > 0
                        ? "signature timestamp is \(age) s old, more than \(Self.toleranceSeconds) s"
                        : "signature timestamp is \(-age) s ahead, more than \(Self.toleranceSeconds) s")
        }
        return verified
    }
}
