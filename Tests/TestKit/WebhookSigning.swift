import Crypto
import Foundation

/// Signs test deliveries the way Stripe and Svix do, written from their published algorithms and apart
/// from the receiver's code, so a shared mistake cannot make the tests pass.
public enum WebhookSigning {
    public static let stripeSecret = "whsec_test_5a1e6b0c9d8f7e6d5c4b3a291807f6e5"
    public static let stripeRotatedSecret = "whsec_test_0f1e2d3c4b5a69788796a5b4c3d2e1f0"
    /// `whsec_` and the base64 of 32 random bytes, as Svix issues them.
    public static let clerkSecret = "whsec_" + Data((0..<32).map { UInt8(($0 * 37 + 11) % 256) }).base64EncodedString()
    public static let clerkRotatedSecret =
        "whsec_" + Data((0..<32).map { UInt8(($0 * 53 + 7) % 256) }).base64EncodedString()

    /// The Stripe event fixtures under Tests/Fixtures/stripe/events.
    public static let stripeFixtures = [
        "checkout_session_completed", "customer_deleted", "customer_updated", "invoice_finalized", "invoice_paid",
        "price_created", "product_created", "subscription_created", "subscription_deleted", "subscription_updated",
    ]

    public static func now() -> Int { Int(Date().timeIntervalSince1970) }

    /// `Stripe-Signature: t=<t>,v1=<hex>` with one `v1` per secret.
    public static func stripeHeader(_ body: [UInt8], secrets: [String] = [stripeSecret], timestamp: Int = now())
        -> String
    {
        stripeHeader(body, secrets: secrets, rawTimestamp: "\(timestamp)")
    }

    /// The same, signed over a timestamp given as text (extreme or malformed values).
    public static func stripeHeader(_ body: [UInt8], secrets: [String] = [stripeSecret], rawTimestamp: String) -> String
    {
        let signatures = secrets.map { secret in
            let mac = HMAC<SHA256>.authenticationCode(
                for: Array("\(rawTimestamp).".utf8) + body, using: SymmetricKey(data: Array(secret.utf8)))
            return "v1=" + mac.map { String(format: "%02x", $0) }.joined()
        }
        return (["t=\(rawTimestamp)"] + signatures).joined(separator: ",")
    }

    /// `svix-id`, `svix-timestamp` and `svix-signature` (or the `webhook-` names) for one delivery.
    public static func svixHeaders(
        _ body: [UInt8], id: String, secrets: [String] = [clerkSecret], timestamp: Int = now(), prefix: String = "svix"
    ) -> [(String, String)] {
        svixHeaders(body, id: id, secrets: secrets, rawTimestamp: "\(timestamp)", prefix: prefix)
    }

    /// The same, signed over a timestamp given as text (extreme or malformed values).
    public static func svixHeaders(
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
    public static func fixture(_ path: String) throws -> [UInt8] {
        try Repository.fixture(path)
    }

    /// A Stripe event with a fresh id, built from a fixture envelope by replacing its id.
    public static func stripeEvent(_ fixture: String, id: String) throws -> [UInt8] {
        var object = try JSONSerialization.jsonObject(with: Data(Self.fixture(fixture))) as! [String: Any]
        object["id"] = id
        return Array(try JSONSerialization.data(withJSONObject: object))
    }
}
