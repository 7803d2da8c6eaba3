import Crypto
import Foundation

/// Verifies Stripe's `Stripe-Signature` header, as Stripe's own libraries do, and reads the event's `id`
/// and `type`.
///
/// The header is `t=<unix seconds>,v1=<hex>[,v1=<hex>…][,v0=…]`. A `v1` is the HMAC-SHA256 of
/// `"<t>.<raw body>"` keyed with the whole `whsec_…` string. Any `v1` matching any configured secret
/// passes (Stripe sends one `v1` per active secret while a secret is being rolled); `v0` and unknown
/// schemes are ignored. The signature is checked before the timestamp, so only a genuine delivery is ever
/// called stale.
public struct StripeSignatureVerifier: WebhookVerifier {
    public static let headerName = "Stripe-Signature"
    /// Stripe's libraries default to five minutes; older deliveries are refused as replays.
    public static let toleranceSeconds = 300

    private let keyed: [HMAC<SHA256>]

    /// - Parameter secrets: the endpoint's signing secrets (`whsec_…`), used byte for byte as HMAC keys.
    public init(secrets: [String]) throws(WebhookSecretProblem) {
        for (index, secret) in secrets.enumerated() where !secret.hasPrefix("whsec_") || secret.count < 10 {
            throw WebhookSecretProblem(
                index: index,
                reason: "is not a whsec_... signing secret; copy it from the endpoint's page in the Stripe dashboard")
        }
        keyed = SignatureMatch.keyed(secrets.map { SymmetricKey(data: Array($0.utf8)) })
    }

    public func verify(body: [UInt8], header: (String) -> String?, now: Int?) throws(WebhookRejection)
        -> VerifiedDelivery
    {
        let signature = header(Self.headerName)
        try verifySignature(signature, body: body, now: now)
        let envelope = try WebhookEnvelope.parse(body, requiresID: true)
        return VerifiedDelivery(
            eventID: envelope.id ?? "", type: envelope.type, headers: [(Self.headerName, signature ?? "")])
    }

    private func verifySignature(_ header: String?, body: [UInt8], now: Int?) throws(WebhookRejection) {
        guard let header, !header.isEmpty else {
            throw .badSignature("missing \(Self.headerName) header")
        }
        // Byte by byte: Foundation's trimming bridges through NSString, which cost more than the HMAC.
        var timestamp: Substring.UTF8View?
        var signatures: [[UInt8]] = []
        for item in header.utf8.split(separator: UInt8(ascii: ",")) {
            guard let equals = item.firstIndex(of: UInt8(ascii: "=")) else { continue }
            let scheme = Self.trimmed(item[..<equals])
            let value = item[item.index(after: equals)...].drop { $0 == UInt8(ascii: " ") }
            if scheme.elementsEqual("t".utf8) {
                timestamp = value
            } else if scheme.elementsEqual("v1".utf8), let bytes = HexBytes.decode(value) {
                signatures.append(bytes)
            }
        }
        guard let timestamp, let seconds = Int(Substring(timestamp)) else {
            throw .badSignature("\(Self.headerName) has no t=<unix seconds> timestamp")
        }
        guard !signatures.isEmpty else {
            throw .badSignature("\(Self.headerName) has no v1 signature")
        }
        guard
            SignatureMatch.any(
                keyed: keyed, signed: Array(timestamp) + [UInt8(ascii: ".")], body: body, candidates: signatures)
        else {
            throw .badSignature("no v1 signature matches a configured STRIPE_WEBHOOK_SECRET")
        }
        guard let now else { return }
        // A signed but absurd timestamp (Int.min) must not trap: an overflowing age is as stale as it gets.
        let (age, overflow) = now.subtractingReportingOverflow(seconds)
        guard !overflow, age <= Self.toleranceSeconds else {
            throw .stale(
                overflow
                    ? "signature timestamp \(seconds) is out of range"
                    : "signature timestamp is \(age) s old, more than \(Self.toleranceSeconds) s")
        }
    }

    /// `bytes` without the spaces and tabs around it.
    private static func trimmed(_ bytes: Substring.UTF8View.SubSequence) -> Substring.UTF8View.SubSequence {
        let isBlank = { (byte: UInt8) in byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\t") }
        guard let first = bytes.firstIndex(where: { !isBlank($0) }), let last = bytes.lastIndex(where: { !isBlank($0) })
        else { return bytes[bytes.startIndex..<bytes.startIndex] }
        return bytes[first...last]
    }
}
