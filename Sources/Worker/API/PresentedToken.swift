import Crypto

/// A bearer token as a request presented it, with its SHA-256 taken once: the rate limiter, the service
/// key cache and the key store each look a token up by its hash, and a session token is a kilobyte long.
struct PresentedToken: Sendable, CustomStringConvertible {
    let text: String
    let digest: SHA256.Digest

    init(_ text: String) {
        self.text = text
        digest = SHA256.hash(data: Array(text.utf8))
    }

    /// Never the token itself: it is a credential.
    var description: String { "PresentedToken(redacted)" }

    /// Whether this is a Sluice service key rather than a session token.
    var isServiceKey: Bool { text.hasPrefix(ServiceKey.marker) }
}
