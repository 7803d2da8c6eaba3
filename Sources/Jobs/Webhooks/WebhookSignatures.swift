public import Crypto
import Foundation

/// The secrets that prove a stored webhook event genuine, and the check the billing jobs make with them.
///
/// The receiver verifies every delivery before it enqueues it, and keeps the raw body and the signature
/// headers in the job's payload. The job verifies them again, without the time tolerance, because a job
/// can reach the queue another way (a mis-granted role, the owner by mistake, a restored dump): an event
/// changes billing only when its own signature says Stripe or Clerk sent it.
public struct WebhookSignatures: Sendable {
    let stripe: StripeSignatureVerifier?
    let clerk: SvixSignatureVerifier?

    /// - Parameters:
    ///   - stripeSecrets: `STRIPE_WEBHOOK_SECRET`'s secrets; empty when Stripe's route is off.
    ///   - clerkKeys: `CLERK_WEBHOOK_SECRET`'s decoded keys; empty when Clerk's route is off.
    public init(stripeSecrets: [String], clerkKeys: [SymmetricKey]) {
        stripe = stripeSecrets.isEmpty ? nil : StripeSignatureVerifier(secrets: stripeSecrets)
        clerk = clerkKeys.isEmpty ? nil : SvixSignatureVerifier(keys: clerkKeys)
    }

    /// Whether any source can be verified: a worker without secrets claims nothing from queue `webhooks`.
    public var isEmpty: Bool { stripe == nil && clerk == nil }

    /// Checks a `stripe.event` or `clerk.event` job's payload: the raw body and headers the receiver kept
    /// must verify against a configured secret.
    /// - Throws: ``Refusal`` saying why the event cannot be trusted.
    func verify(kind: String, payload: String) throws(Refusal) {
        guard let object = (try? JSONSerialization.jsonObject(with: Data(payload.utf8))) as? [String: Any],
            let body = object["body"] as? String, let headers = object["headers"] as? [String: Any]
        else {
            throw Refusal(
                "not a delivery the receiver stored (no raw body and signature headers); an event that did not "
                    + "arrive signed is never applied")
        }
        let header = { (name: String) -> String? in headers[name.lowercased()] as? String }
        let bytes = Array(body.utf8)
        if kind == "stripe.event" {
            guard let stripe else { throw Refusal("no STRIPE_WEBHOOK_SECRET is configured to verify it") }
            do {
                try stripe.verify(header: header(StripeSignatureVerifier.headerName), body: bytes, now: nil)
            } catch {
                throw Refusal("its stored signature does not verify: \(error.reason)")
            }
        } else {
            guard let clerk else { throw Refusal("no CLERK_WEBHOOK_SECRET is configured to verify it") }
            do {
                _ = try clerk.verify(header: header, body: bytes, now: nil)
            } catch {
                throw Refusal("its stored signature does not verify: \(error.reason)")
            }
        }
    }

    /// Why a stored event is not applied.
    struct Refusal: Error, CustomStringConvertible {
        var description: String
        init(_ description: String) { self.description = description }
    }
}
