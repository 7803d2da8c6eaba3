import Foundation
import JWTKit
import TestKit

@testable import Worker

/// Clerk-like session tokens for the API's tests: an RSA key made with openssl (`RSAKeyPair`), and tokens signed with it
/// (or forged) by jwt-kit, apart from the server's verifier.
struct ClerkTokens: Sendable {
    static let issuer = "https://clerk.sluice.test"
    let privatePEM: String
    let publicPEM: String

    init() throws {
        let keys = try RSAKeyPair()
        privatePEM = keys.privatePEM
        publicPEM = keys.publicPEM
    }

    /// The claims the server reads (its own type: only the signing here is apart from the server).
    typealias Claims = ClerkSessionVerifier.Claims

    /// A token for `user`, valid now unless the arguments say otherwise; `kid` names the key in its header.
    func token(
        user: String = "ada", expiresIn: Double = 60, notBefore: Double? = nil, issuer: String = Self.issuer,
        party: String? = "https://app.sluice.test", kid: String? = nil
    ) async throws -> String {
        let keyID = kid.map { JWKIdentifier(string: $0) }
        let keys = await JWTKeyCollection().add(
            rsa: try Insecure.RSA.PrivateKey(pem: privatePEM), digestAlgorithm: .sha256, kid: keyID)
        return try await keys.sign(claims(user, expiresIn, notBefore, issuer, party), kid: keyID)
    }

    /// The public key as a JWK named `kid`, as Clerk publishes it at its JWKS URL.
    func jwk(kid: String) throws -> String {
        let (modulus, exponent) = try Insecure.RSA.PublicKey(pem: publicPEM).getKeyPrimitives()
        func base64URL(_ data: Data) -> String {
            data.base64EncodedString().replacingOccurrences(of: "+", with: "-")
                .replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
        }
        return
            #"{"kty":"RSA","kid":"\#(kid)","use":"sig","alg":"RS256","n":"\#(base64URL(modulus))","e":"\#(base64URL(exponent))"}"#
    }

    /// The same claims, HS256-signed with the public key's PEM as the secret (the classic confusion attack).
    func hmacWithPublicKey(user: String = "ada") async throws -> String {
        let keys = await JWTKeyCollection().add(hmac: HMACKey(from: publicPEM), digestAlgorithm: .sha256)
        return try await keys.sign(claims(user, 60, nil, Self.issuer, "https://app.sluice.test"))
    }

    /// An unsigned token (`alg: none`).
    static func unsigned(user: String = "ada") -> String {
        func encode(_ json: String) -> String {
            Data(json.utf8).base64EncodedString().replacingOccurrences(of: "+", with: "-")
                .replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
        }
        let exp = Int(Date().timeIntervalSince1970) + 60
        return encode(#"{"alg":"none","typ":"JWT"}"#) + "."
            + encode(#"{"sub":"\#(user)","exp":\#(exp),"iss":"\#(issuer)"}"#) + "."
    }

    private func claims(_ user: String, _ expiresIn: Double, _ notBefore: Double?, _ issuer: String, _ party: String?)
        -> Claims
    {
        Claims(
            sub: .init(value: user), exp: .init(value: Date().addingTimeInterval(expiresIn)),
            nbf: notBefore.map { .init(value: Date().addingTimeInterval($0)) }, iss: .init(value: issuer), azp: party)
    }
}
