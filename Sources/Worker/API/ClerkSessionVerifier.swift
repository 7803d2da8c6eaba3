import Foundation
import JWTKit

/// How the API checks a signed-in user's Clerk session token: `CLERK_JWT_KEY`, `CLERK_ISSUER`,
/// `CLERK_AUTHORIZED_PARTIES`.
struct ClerkSessionSettings: Sendable {
    /// The instance's RS256 public key, PEM (Clerk's dashboard: API keys, "PEM public key").
    var publicKeyPEM: String
    /// The `iss` every token must carry: the instance's Frontend API URL.
    var issuer: String
    /// When not empty, the `azp` (the origin the token was made for) must be one of these.
    var authorizedParties: [String]
}

/// Verifies Clerk session tokens: an RS256 signature by the configured key (no other algorithm, so
/// `alg: none` and an HS256 token keyed with the public key are refused), `exp` and `nbf` with 5 s of
/// leeway, `iss`, and `azp` when parties are configured. The user is the token's `sub`.
struct ClerkSessionVerifier: Sendable {
    static let leewaySeconds: Double = 5

    private let keys: JWTKeyCollection
    private let settings: ClerkSessionSettings

    init(settings: ClerkSessionSettings) async throws {
        let key = try Insecure.RSA.PublicKey(pem: settings.publicKeyPEM)
        keys = await JWTKeyCollection().add(rsa: key, digestAlgorithm: .sha256)
        self.settings = settings
    }

    /// The user a token belongs to, or why it is refused (safe to send back: no token content).
    func user(of token: String, now: Date = Date()) async -> Result<String, SessionRefusal> {
        let claims: Claims
        do {
            claims = try await keys.verify(token, as: Claims.self)
        } catch {
            return .failure(SessionRefusal("the token's signature does not verify with CLERK_JWT_KEY"))
        }
        guard claims.exp.value.addingTimeInterval(Self.leewaySeconds) > now else {
            return .failure(SessionRefusal("the token has expired"))
        }
        if let notBefore = claims.nbf, notBefore.value > now.addingTimeInterval(Self.leewaySeconds) {
            return .failure(SessionRefusal("the token is not valid yet"))
        }
        guard claims.iss.value == settings.issuer else {
            return .failure(SessionRefusal("the token was issued by another Clerk instance"))
        }
        if !settings.authorizedParties.isEmpty {
            guard let party = claims.azp, settings.authorizedParties.contains(party) else {
                return .failure(SessionRefusal("the token was made for an origin not in CLERK_AUTHORIZED_PARTIES"))
            }
        }
        guard !claims.sub.value.isEmpty, claims.sub.value.utf8.count <= 255 else {
            return .failure(SessionRefusal("the token names no user"))
        }
        return .success(claims.sub.value)
    }

    /// The claims of a Clerk session token that the API reads.
    struct Claims: JWTPayload {
        var sub: SubjectClaim
        var exp: ExpirationClaim
        var nbf: NotBeforeClaim?
        var iss: IssuerClaim
        var azp: String?

        /// The time claims are checked by ``ClerkSessionVerifier/user(of:now:)``, with leeway.
        func verify(using algorithm: some JWTAlgorithm) throws {}
    }

    struct SessionRefusal: Error, CustomStringConvertible {
        var description: String
        init(_ description: String) { self.description = description }
    }
}
