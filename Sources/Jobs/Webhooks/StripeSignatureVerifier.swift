public import Crypto
import Foundation

/// Verifies Stripe's `Stripe-Signature` header, as Stripe's own libraries do.
///
/// The header is `t=<unix seconds>,v1=<hex>[,v1=<hex>…][,v0=…]`. A `v1` is the HMAC-SHA256 of
/// `"<t>.<raw body>"` keyed with the whole `whsec_…` string. Any `v1` matching any configured secret
/// passes (Stripe sends one `v1` per active secret while a secret is being rolled); `v0` and unknown
/// schemes are ignored. The signature is checked before the timestamp, so only a genuine delivery is ever
/// called stale.
public struct StripeSignatureVerifier: Sendable {
    public static let headerName = "Stripe-Signature"
    /// Stripe's libraries default to five minutes; older deliveries are refused as replays.
    public static let toleranceSeconds = 300

    private let keys: [SymmetricKey]

    /// - Parameter secrets: the endpoint's signing secrets (`whsec_…`), used byte for byte as HMAC keys.
    public init(secrets: [String]) {
        keys = secrets.map { SymmetricKey(data: Array($0.utf8)) }
    }

    /// - Parameter now: the current Unix time in seconds; nil checks the signature only (a stored delivery,
    ///   verified again long after it arrived).
    public func verify(header: String?, body: [UInt8], now: Int?) throws(WebhookRejection) {
        guard let header, !header.isEmpty else {
            throw .badSignature("missing \(Self.headerName) header")
        }
        var timestamp: Substring?
        var signatures: [[UInt8]] = []
        for item in header.split(separator: ",") {
            guard let equals = item.firstIndex(of: "=") else { continue }
            let scheme = item[..<equals].trimmingCharacters(in: .whitespaces)
            let value = item[item.index(after: equals)...].drop { $0 == " " }
            switch scheme {
            case "t": timestamp = value
            case "v1": if let bytes = HexBytes.decode(value) { signatures.append(bytes) }
            default: continue
            }
        }
        guard let timestamp, let seconds = Int(timestamp) else {
            throw .badSignature("\(Self.headerName) has no t=<unix seconds> timestamp")
        }
        guard !signatures.isEmpty else {
            throw .badSignature("\(Self.headerName) has no v1 signature")
        }
        guard SignatureMatch.any(keys: keys, signed: Array("\(timestamp).".utf8), body: body, candidates: signatures)
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
}

/// Lower- or upper-case hexadecimal text to bytes.
enum HexBytes {
    static func decode(_ text: Substring) -> [UInt8]? {
        let digits = Array(text.utf8)
        guard !digits.isEmpty, digits.count % 2 == 0 else { return nil }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(digits.count / 2)
        var index = 0
        while index < digits.count {
            guard let high = value(digits[index]), let low = value(digits[index + 1]) else { return nil }
            bytes.append(high << 4 | low)
            index += 2
        }
        return bytes
    }

    private static func value(_ digit: UInt8) -> UInt8? {
        switch digit {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): digit - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): digit - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): digit - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}
