import Foundation
import Logging
import Testing

@testable import Worker

/// Clerk session tokens, verified in this process against tokens signed apart from the verifier.
@Suite("Clerk session tokens")
struct ClerkSessionTests {
    static func verifier(_ tokens: ClerkTokens, parties: [String] = ["https://app.sluice.test"]) async throws
        -> ClerkSessionVerifier
    {
        try await ClerkSessionVerifier(
            settings: .init(keys: .pem(tokens.publicPEM), issuer: ClerkTokens.issuer, authorizedParties: parties),
            logger: Logger(label: "test"))
    }

    @Test("a valid RS256 token gives its sub; each bad one is refused with its reason")
    func tokens() async throws {
        let tokens = try ClerkTokens()
        let verifier = try await Self.verifier(tokens)
        #expect(try await verifier.user(of: tokens.token(user: "user_2abc")).get() == "user_2abc")
        #expect(try await verifier.user(of: tokens.token(expiresIn: -3)).get() == "ada", "5 s of leeway")

        func refusal(_ token: String) async -> String? {
            if case .failure(let reason) = await verifier.user(of: token) { return reason.description }
            return nil
        }
        #expect(await refusal(try tokens.token(expiresIn: -60))?.contains("expired") == true)
        #expect(await refusal(try tokens.token(notBefore: 60))?.contains("not valid yet") == true)
        #expect(await refusal(try tokens.token(issuer: "https://clerk.other.test"))?.contains("another Clerk") == true)
        #expect(await refusal(try tokens.token(party: "https://evil.test"))?.contains("AUTHORIZED_PARTIES") == true)
        #expect(await refusal(try tokens.token(party: nil))?.contains("AUTHORIZED_PARTIES") == true)
        #expect(await refusal(try ClerkTokens().token())?.contains("signature") == true, "another key")
        #expect(await refusal(ClerkTokens.unsigned())?.contains("not an RS256") == true, "alg none")
        #expect(
            await refusal(try tokens.hmacWithPublicKey())?.contains("not an RS256") == true, "HS256 keyed with the PEM")
        #expect(await refusal("not.a.token") != nil)
        var tampered = try await tokens.token()
        tampered = String(tampered.dropLast(2)) + (tampered.hasSuffix("AA") ? "BB" : "AA")
        #expect(await refusal(tampered) != nil)
    }

    @Test("without configured parties any azp is accepted")
    func noParties() async throws {
        let tokens = try ClerkTokens()
        let verifier = try await Self.verifier(tokens, parties: [])
        #expect(try await verifier.user(of: tokens.token(party: nil)).get() == "ada")
    }
}
