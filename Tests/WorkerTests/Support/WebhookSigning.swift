import Crypto
import Foundation

/// Signs test deliveries the way Stripe and Svix do, written from their published algorithms and apart
/// from the receiver's code, so a shared mistake cannot make the tests pass.
enum WebhookSigning {
    static let stripeSecret = "whsec_test_5a1e6b0c9d8f7e6d5c4b3a291807f6e5"
    static let stripeRotatedSecret = "whsec_test_0f1e2d3c4b5a69788796a5b4c3d2e1f0"
    /// `whsec_` and the base64 of 32 random bytes, as Svix issues them.
    static let clerkSecret = "whsec_" + Data((0..<32).map { UInt8(($0 * 37 + 11) % 256) }).base64EncodedString()
    static let clerkRotatedSecret =
        "whsec_" + Data((0..<32).map { UInt8(($0 * 53 + 7) % 256) }).base64EncodedString()

    static func now() -> Int { Int(Date().timeIntervalSince1970) }

    /// `Stripe-Signature: t=<t>,v1=<hex>` with one `v1` per secret.
    static func stripeHeader(_ body: [UInt8], secrets: [String] = [stripeSecret], timestamp: Int = now()) -> String {
        stripeHeader(body, secrets: secrets, rawTimestamp: "\(timestamp)")
    }

    /// The same, signed over a timestamp given as text (extreme or malformed values).
    static func stripeHeader(_ body: [UInt8], secrets: [String] = [stripeSecret], rawTimestamp: String) -> String {
        let signatures = secrets.map { secret in
            let mac = HMAC<SHA256>.authenticationCode(
                for: Array("\(rawTimestamp).".utf8) + body, using: SymmetricKey(data: Array(secret.utf8)))
            return "v1=" + mac.map { String(format: "%02x", $0) }.joined()
        }
        return (["t=\(rawTimestamp)"] + signatures).joined(separator: ",")
    }

    /// `svix-id`, `svix-timestamp` and `svix-signature` (or the `webhook-` names) for one delivery.
    static func svixHeaders(
        _ body: [UInt8], id: String, secrets: [String] = [clerkSecret], timestamp: Int = now(), prefix: String = "svix"
    ) -> [(String, String)] {
        svixHeaders(body, id: id, secrets: secrets, rawTimestamp: "\(timestamp)", prefix: prefix)
    }

    /// The same, signed over a timestamp given as text (extreme or malformed values).
    static func svixHeaders(
        _ body: [UInt8], id: String, secrets: [String] = [clerkSecret], rawTimestamp timestamp: String,
        prefix: String = "svix"
    ) -> [(String, String)] {
        let signatures = secrets.map { secret in
            let key = SymmetricKey(data: Data(base64Encoded: String(secret.dropFirst("whsec_".count)))!)
            let mac = HMAC<SHA256>.authenticationCode(for: Array("\(id).\(timestamp).".utf8) + body, using: key)
            return "v1," + Data(mac).base64EncodedString()
        }
        return [
            ("\(prefix)-id", id), ("\(prefix)-timestamp", "\(timestamp)"),
            ("\(prefix)-signature", signatures.joined(separator: " ")),
        ]
    }

    /// A fixture file's bytes, exactly as stored (Tests/Fixtures, see its README for the sources).
    static func fixture(_ path: String) throws -> [UInt8] {
        Array(try Data(contentsOf: Cluster.repositoryRoot.appendingPathComponent("Tests/Fixtures/\(path)")))
    }

    /// A Stripe event with a fresh id, built from a fixture envelope by replacing its id.
    static func stripeEvent(_ fixture: String, id: String) throws -> [UInt8] {
        var object = try JSONSerialization.jsonObject(with: Data(Self.fixture(fixture))) as! [String: Any]
        object["id"] = id
        return Array(try JSONSerialization.data(withJSONObject: object))
    }
}
