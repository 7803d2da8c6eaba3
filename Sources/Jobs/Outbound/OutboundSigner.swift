import Crypto
import Foundation

/// Signs an outbound event as the Standard Webhooks specification says, so the app verifies it with any
/// Standard Webhooks or Svix library: `webhook-signature` is `v1,<base64 HMAC-SHA256 of "id.timestamp.body">`
/// keyed with the base64-decoded part of each `whsec_` secret, space-separated when a rotation leaves two.
public struct OutboundSigner: Sendable {
    private let keys: [SymmetricKey]

    /// - Parameter secrets: `whsec_` and base64; the current one first.
    public init(secrets: [String]) throws(OutboundSecretProblem) {
        keys = try secrets.map { secret throws(OutboundSecretProblem) in
            guard let key = Self.key(secret) else { throw OutboundSecretProblem() }
            return key
        }
    }

    /// The `webhook-signature` header of one delivery.
    public func signature(id: String, timestamp: Int, body: [UInt8]) -> String {
        let signed = Array("\(id).\(timestamp).".utf8) + body
        return keys.map { key in
            "v1," + Data(HMAC<SHA256>.authenticationCode(for: signed, using: key)).base64EncodedString()
        }.joined(separator: " ")
    }

    /// A new secret: `whsec_` and the base64 of 24 random bytes, as Svix makes them.
    public static func newSecret() -> String {
        var generator = SystemRandomNumberGenerator()
        let bytes = (0..<24).map { _ in UInt8.random(in: 0...255, using: &generator) }
        return "whsec_" + Data(bytes).base64EncodedString()
    }

    private static func key(_ secret: String) -> SymmetricKey? {
        guard secret.hasPrefix("whsec_") else { return nil }
        var encoded = String(secret.dropFirst("whsec_".count))
        if encoded.count % 4 != 0 { encoded += String(repeating: "=", count: 4 - encoded.count % 4) }
        guard let bytes = Data(base64Encoded: encoded), bytes.count >= 16 else { return nil }
        return SymmetricKey(data: bytes)
    }
}

/// A signing secret that is not `whsec_` and the base64 of at least 16 bytes (no part of it is repeated).
public struct OutboundSecretProblem: Error, CustomStringConvertible {
    public var description: String {
        "an endpoint's signing secret is not whsec_ followed by the base64 of at least 16 bytes; make one with "
            + "sluice endpoints rotate-secret"
    }
}
