/// Proves a webhook delivery genuine on its raw bytes and says which event it carries.
///
/// The receiver calls it for every request, with the current time, before anything is stored; the
/// event's job calls it again on the stored copy, without the time tolerance, before the event changes
/// anything. A new webhook source is one conformance, one handler and one configuration entry.
public protocol WebhookVerifier: Sendable {
    /// A verifier for a source's signing secrets (several while one is rolled).
    /// - Throws: ``WebhookSecretProblem`` naming the position of a secret that cannot be right.
    init(secrets: [String]) throws(WebhookSecretProblem)

    /// Verifies a delivery: its signature, then its timestamp, then the fields routing needs.
    /// - Parameters:
    ///   - body: the raw request body, exactly as received.
    ///   - header: the value of a request header by name (any case), or nil.
    ///   - now: the current Unix time in seconds; nil checks the signature only (a stored delivery,
    ///     verified again long after it arrived).
    func verify(body: [UInt8], header: (String) -> String?, now: Int?) throws(WebhookRejection) -> VerifiedDelivery
}

/// A delivery that passed: what the receiver keys, logs and keeps.
public struct VerifiedDelivery: Sendable {
    /// The event's id, unique per source: a redelivery carries the same one.
    public var eventID: String
    /// The event's type (`customer.subscription.updated`, `user.created`).
    public var type: String
    /// The signature headers, kept with the body so the event's job can verify it again.
    public var headers: [(name: String, value: String)]

    public init(eventID: String, type: String, headers: [(name: String, value: String)]) {
        self.eventID = eventID
        self.type = type
        self.headers = headers
    }
}

/// A configured signing secret that cannot be right; never holds the secret itself.
public struct WebhookSecretProblem: Error, Sendable, CustomStringConvertible {
    /// 0-based position in the comma-separated list.
    public var index: Int
    /// What is wrong and where to find the right value.
    public var reason: String

    public init(index: Int, reason: String) {
        self.index = index
        self.reason = reason
    }

    public var description: String { "secret \(index + 1) \(reason)" }
}
