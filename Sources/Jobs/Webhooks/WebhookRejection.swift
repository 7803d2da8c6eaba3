/// Why a webhook delivery was refused with `400`: safe to log and to send back, since it never holds a
/// secret, a signature or the body.
public struct WebhookRejection: Error, Sendable, CustomStringConvertible {
    /// The metric outcome a rejection counts under.
    public enum Outcome: String, Sendable {
        /// A signature header is missing or malformed, or no signature matches any configured secret.
        case badSignature = "bad_signature"
        /// The signature matches but its timestamp is outside the tolerance (a replay, or a clock far off).
        case stale
        /// Genuine, but the body is not a JSON object with the fields routing needs.
        case malformed
    }

    public var outcome: Outcome
    public var reason: String

    public var description: String { reason }

    public static func badSignature(_ reason: String) -> Self { .init(outcome: .badSignature, reason: reason) }
    public static func stale(_ reason: String) -> Self { .init(outcome: .stale, reason: reason) }
    public static func malformed(_ reason: String) -> Self { .init(outcome: .malformed, reason: reason) }
}
