/// The webhook sources this process accepts, each with the verifier its configuration built.
///
/// The receiver routes `POST /webhooks/<source>` through it; the event jobs verify their stored delivery
/// with it again, without the time tolerance, because a job can reach the queue another way (a
/// mis-granted role, the owner by mistake, a restored dump): an event changes billing only when its own
/// signature says its sender sent it.
public struct WebhookVerifiers: Sendable, CustomStringConvertible {
    private let table: [WebhookSource: any WebhookVerifier]

    public init(_ table: [WebhookSource: any WebhookVerifier] = [:]) {
        self.table = table
    }

    /// The verifier of `source`, or nil when no secret is configured for it (its route answers 404).
    public subscript(source: WebhookSource) -> (any WebhookVerifier)? { table[source] }

    /// The sources with a verifier, by name.
    public var sources: [WebhookSource] { table.keys.sorted() }

    /// No source can be verified: a worker then claims nothing from queue `webhooks`.
    public var isEmpty: Bool { table.isEmpty }

    /// The configured sources' names; never a secret.
    public var description: String { table.isEmpty ? "none" : sources.map(\.name).joined(separator: ",") }

    /// Checks a stored delivery (an event job's payload): the raw body and signature headers the receiver
    /// kept must verify for `source`.
    /// - Throws: ``StoredDeliveryRefusal`` saying why the event cannot be trusted.
    func verifyStored(source: WebhookSource, payload: String) throws(StoredDeliveryRefusal) {
        guard let delivery = WebhookJobPayload.storedDelivery(payload) else {
            throw StoredDeliveryRefusal(
                "not a delivery the receiver stored (no raw body and signature headers); an event that did not "
                    + "arrive signed is never applied")
        }
        guard let verifier = table[source] else {
            throw StoredDeliveryRefusal("no \(source.name) webhook secret is configured to verify it")
        }
        do {
            _ = try verifier.verify(
                body: delivery.body, header: { delivery.headers[$0.lowercased()] }, now: nil)
        } catch {
            throw StoredDeliveryRefusal("its stored signature does not verify: \(error.reason)")
        }
    }
}

/// Why a stored event is not applied.
struct StoredDeliveryRefusal: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
