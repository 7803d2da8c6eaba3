import Foundation
import TestKit
import Testing

@testable import Jobs

/// The webhook verifiers, in this process, against deliveries signed by TestKit's independent signer.
@Suite("webhook verifiers")
struct WebhookVerifierTests {
    static let body = Array(#"{"id":"evt_1","object":"event","type":"customer.created"}"#.utf8)

    static func headers(_ pairs: [(String, String)]) -> (String) -> String? {
        { name in pairs.first { $0.0.lowercased() == name.lowercased() }?.1 }
    }

    static func rejection(_ body: () throws -> Void) -> WebhookRejection? {
        do {
            try body()
            return nil
        } catch {
            return error as? WebhookRejection
        }
    }

    @Test("Stripe: a genuine delivery gives its id, type and the header to keep, under either of two secrets")
    func stripeGenuine() throws {
        let verifier = try StripeSignatureVerifier(secrets: [
            WebhookSigning.stripeRotatedSecret, WebhookSigning.stripeSecret,
        ])
        let header = WebhookSigning.stripeHeader(Self.body)
        let delivery = try verifier.verify(
            body: Self.body, header: Self.headers([("Stripe-Signature", header)]), now: WebhookSigning.now())
        #expect(delivery.eventID == "evt_1")
        #expect(delivery.type == "customer.created")
        #expect(delivery.headers.map(\.name) == ["Stripe-Signature"] && delivery.headers.map(\.value) == [header])
    }

    @Test("Stripe: forged, tampered, unsigned, stale and malformed deliveries are refused with their reason")
    func stripeRefused() throws {
        let verifier = try StripeSignatureVerifier(secrets: [WebhookSigning.stripeSecret])
        let now = WebhookSigning.now()
        func outcome(_ body: [UInt8], _ header: String?, now: Int? = now) -> WebhookRejection.Outcome? {
            Self.rejection {
                _ = try verifier.verify(
                    body: body, header: { $0 == "Stripe-Signature" ? header : nil }, now: now)
            }?.outcome
        }
        #expect(outcome(Self.body, nil) == .badSignature)
        #expect(outcome(Self.body, "t=\(now)") == .badSignature)
        #expect(
            outcome(Self.body, WebhookSigning.stripeHeader(Self.body, secrets: ["whsec_someone_else"])) == .badSignature
        )
        #expect(outcome(Self.body + [0x20], WebhookSigning.stripeHeader(Self.body)) == .badSignature)
        let old = WebhookSigning.stripeHeader(Self.body, timestamp: now - 301)
        #expect(outcome(Self.body, old) == .stale)
        #expect(outcome(Self.body, old, now: nil) == nil, "a stored delivery is checked without the tolerance")
        #expect(outcome(Self.body, WebhookSigning.stripeHeader(Self.body, rawTimestamp: "\(Int.min)")) == .stale)
        let noID = Array(#"{"type":"customer.created"}"#.utf8)
        #expect(outcome(noID, WebhookSigning.stripeHeader(noID)) == .malformed)
        let nul = Array(#"{"id":"evt_1","type":"a"}"#.utf8) + [0]
        #expect(outcome(nul, WebhookSigning.stripeHeader(nul)) == .malformed)
    }

    @Test("Svix: svix- and webhook- header names; the svix-id is the event id; forged and stale ones refused")
    func svix() throws {
        let verifier = try SvixSignatureVerifier(secrets: [WebhookSigning.clerkSecret])
        let body = Array(#"{"object":"event","type":"user.created","data":{}}"#.utf8)
        let now = WebhookSigning.now()
        for prefix in ["svix", "webhook"] {
            let delivery = try verifier.verify(
                body: body, header: Self.headers(WebhookSigning.svixHeaders(body, id: "msg_1", prefix: prefix)),
                now: now)
            #expect(delivery.eventID == "msg_1" && delivery.type == "user.created")
            #expect(delivery.headers.map(\.name) == ["\(prefix)-id", "\(prefix)-timestamp", "\(prefix)-signature"])
        }
        let forged = WebhookSigning.svixHeaders(body, id: "msg_1", secrets: [WebhookSigning.clerkRotatedSecret])
        #expect(
            Self.rejection { _ = try verifier.verify(body: body, header: Self.headers(forged), now: now) }?.outcome
                == .badSignature)
        let ahead = WebhookSigning.svixHeaders(body, id: "msg_1", timestamp: now + 301)
        #expect(
            Self.rejection { _ = try verifier.verify(body: body, header: Self.headers(ahead), now: now) }?.outcome
                == .stale)
        let longID = String(repeating: "m", count: 256)
        let long = WebhookSigning.svixHeaders(body, id: longID)
        #expect(
            Self.rejection { _ = try verifier.verify(body: body, header: Self.headers(long), now: now) }?.outcome
                == .badSignature)
    }

    @Test("secrets that cannot be right are refused naming their position, never their text")
    func badSecrets() {
        #expect(throws: WebhookSecretProblem.self) {
            try StripeSignatureVerifier(secrets: ["whsec_good_enough", "sk_live_oops"])
        }
        do {
            _ = try SvixSignatureVerifier(secrets: [WebhookSigning.clerkSecret, "whsec_c2hvcnQ="])
            Issue.record("a 5-byte key was accepted")
        } catch {
            #expect(error.index == 1)
            #expect(!error.description.contains("c2hvcnQ"))
        }
    }

    @Test("a stored delivery verifies again only with its own source's verifier and unaltered bytes")
    func storedDeliveries() throws {
        let verifiers = WebhookVerifiers([.stripe: try StripeSignatureVerifier(secrets: [WebhookSigning.stripeSecret])])
        func payload(_ body: [UInt8], signedBody: [UInt8]) -> String {
            WebhookJobPayload.make(
                source: .stripe, eventID: "evt_1", type: "customer.created", receivedAt: Date(),
                headers: [("Stripe-Signature", WebhookSigning.stripeHeader(signedBody, timestamp: 1_000))], body: body)
        }
        try verifiers.verifyStored(source: .stripe, payload: payload(Self.body, signedBody: Self.body))
        let tampered = Array(#"{"id":"evt_1","object":"event","type":"customer.deleted"}"#.utf8)
        #expect(throws: StoredDeliveryRefusal.self) {
            try verifiers.verifyStored(source: .stripe, payload: payload(tampered, signedBody: Self.body))
        }
        #expect(throws: StoredDeliveryRefusal.self) {
            try verifiers.verifyStored(source: .clerk, payload: payload(Self.body, signedBody: Self.body))
        }
        #expect(throws: StoredDeliveryRefusal.self) {
            try verifiers.verifyStored(source: .stripe, payload: String(decoding: Self.body, as: UTF8.self))
        }
    }

    @Test("a source is one conformance and one table entry: a new one needs nothing else to route and re-verify")
    func pluggableSource() throws {
        struct SharedToken: WebhookVerifier {
            let token: String
            init(secrets: [String]) throws(WebhookSecretProblem) {
                guard let first = secrets.first else { throw WebhookSecretProblem(index: 0, reason: "is missing") }
                token = first
            }
            func verify(body: [UInt8], header: (String) -> String?, now: Int?) throws(WebhookRejection)
                -> VerifiedDelivery
            {
                guard header("x-token") == token else { throw .badSignature("wrong x-token") }
                let envelope = try WebhookEnvelope.parse(body, requiresID: true)
                return VerifiedDelivery(eventID: envelope.id ?? "", type: envelope.type, headers: [("x-token", token)])
            }
        }
        let source = WebhookSource("acme")
        let verifiers = WebhookVerifiers([source: try SharedToken(secrets: ["s3cret"])])
        #expect(verifiers.sources == [source] && source.jobKind == "acme.event" && source.path == "/webhooks/acme")
        let stored = WebhookJobPayload.make(
            source: source, eventID: "e1", type: "thing.happened", receivedAt: Date(), headers: [("X-Token", "s3cret")],
            body: Self.body)
        try verifiers.verifyStored(source: source, payload: stored)
    }

    @Test("a stored body comes back byte for byte: every control byte, quote, backslash and multibyte character")
    func payloadKeepsTheBody() throws {
        var body = Array(#"{"id":"evt_1","note":"a \"quoted\" \\ path","type":"x"}"#.utf8)
        body += Array(0..<0x20) + Array("é€😀/\"\\".utf8) + Array(0x20..<0x80)
        let payload = WebhookJobPayload.make(
            source: .stripe, eventID: "evt_\"1\"", type: "a\\b\n", receivedAt: Date(),
            headers: [("Stripe-Signature", "t=1,v1=\u{1}")], body: body)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(payload.utf8)) as? [String: Any])
        #expect((object["body"] as? String).map { Array($0.utf8) } == body)
        #expect(object["event_id"] as? String == "evt_\"1\"" && object["type"] as? String == "a\\b\n")
        #expect((object["headers"] as? [String: String])?["stripe-signature"] == "t=1,v1=\u{1}")
        #expect(WebhookJobPayload.storedDelivery(payload)?.body == body)
    }

    @Test("an id or type holding a NUL is refused: it could not be stored, and would fail the whole group commit")
    func nulInEnvelope() {
        for body in [#"{"id":"evt_\u0000","type":"x"}"#, #"{"id":"evt_1","type":"a\u0000b"}"#] {
            #expect(throws: WebhookRejection.self) { try WebhookEnvelope.parse(Array(body.utf8), requiresID: true) }
        }
    }
}
