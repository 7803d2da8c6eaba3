import Foundation
import JWTKit
import Logging

/// How the API checks a signed-in user's Clerk session token: `CLERK_JWT_KEY` or `CLERK_JWKS_URL`,
/// `CLERK_ISSUER`, `CLERK_AUTHORIZED_PARTIES`.
struct ClerkSessionSettings: Sendable {
    /// Where Clerk's public keys come from.
    enum Keys: Sendable, Equatable {
        /// The instance's RS256 public key, PEM (Clerk's dashboard: API keys, "PEM public key"): no network.
        case pem(String)
        /// The instance's JWKS URL (`https://<frontend api>/.well-known/jwks.json`), fetched and refreshed.
        case jwks(url: String)
    }

    var keys: Keys
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

    private enum Keys: Sendable {
        case fixed(JWTKeyCollection)
        case published(ClerkJWKS)
    }

    private let keys: Keys
    private let settings: ClerkSessionSettings

    init(settings: ClerkSessionSettings, logger: Logger) async throws {
        switch settings.keys {
        case .pem(let pem):
            keys = .fixed(
                await JWTKeyCollection().add(rsa: try Insecure.RSA.PublicKey(pem: pem), digestAlgorithm: .sha256))
        case .jwks(let url):
            let published = ClerkJWKS(url: url, logger: logger)
            await published.start()
            keys = .published(published)
        }
        self.settings = settings
    }

    /// The user a token belongs to, or why it is refused (safe to send back: no token content).
    func user(of token: String, now: Date = Date()) async -> Result<String, SessionRefusal> {
        // Checked before any key is looked up: only RS256, and with published keys only a key they hold.
        guard let header = Header(of: token), header.alg == "RS256" else {
            return .failure(SessionRefusal("the token is not an RS256-signed JWT"))
        }
        let collection: JWTKeyCollection
        switch keys {
        case .fixed(let fixed): collection = fixed
        case .published(let published):
            guard let kid = header.kid, let found = await published.keys(for: kid) else {
                return .failure(SessionRefusal("the token is signed by a key not published at CLERK_JWKS_URL"))
            }
            collection = found
        }
        let claims: Claims
        do {
            claims = try await collection.verify(token, as: Claims.self)
        } catch {
            return .failure(SessionRefusal("the token's signature does not verify with Clerk's key"))
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

    /// The JOSE header's fields that choose the key, read without trusting anything else in the token.
    private struct Header: Decodable {
        var alg: String
        var kid: String?

        init?(of token: String) {
            guard let first = token.split(separator: ".", maxSplits: 1).first, first.utf8.count <= 1024 else {
                return nil
            }
            var base64 = first.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
            base64 += String(repeating: "=", count: (4 - base64.utf8.count % 4) % 4)
            guard let data = Data(base64Encoded: base64), let header = try? JSONDecoder().decode(Self.self, from: data)
            else { return nil }
            self = header
        }
    }

    struct SessionRefusal: Error, CustomStringConvertible {
        var description: String
        init(_ description: String) { self.description = description }
    }
}
