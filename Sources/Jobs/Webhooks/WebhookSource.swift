/// A sender of webhooks (`stripe`, `clerk`): its name gives its route, the kind of job its deliveries
/// become, and the unique key that absorbs a redelivery.
public struct WebhookSource: Hashable, Sendable, Comparable, CustomStringConvertible {
    /// Lower-case letters, digits and `_`: it appears in a URL path, a job kind and a metric label.
    public let name: String

    public init(_ name: String) {
        precondition(
            !name.isEmpty && name.allSatisfy { $0.isASCII && ($0.isLowercase || $0.isNumber || $0 == "_") },
            "a webhook source's name is lower-case letters, digits and _")
        self.name = name
    }

    public static let stripe = WebhookSource("stripe")
    public static let clerk = WebhookSource("clerk")

    /// Every delivery waits in this queue, so webhook handling can be given slots of its own.
    public static let queue = "webhooks"

    /// `/webhooks/<name>`.
    public var path: String { "/webhooks/\(name)" }

    /// `<name>.event`: `stripe.event`, `clerk.event`.
    public var jobKind: String { "\(name).event" }

    /// `<name>:<event id>` (`stripe:evt_…`, `clerk:<svix-id>`): a redelivery has the same key and is absorbed.
    public func uniqueKey(_ eventID: String) -> String { "\(name):\(eventID)" }

    public var description: String { name }

    public static func < (lhs: WebhookSource, rhs: WebhookSource) -> Bool { lhs.name < rhs.name }
}
