public import Foundation

/// A job to add to the queue; see `sluice.enqueue` in schema.sql for the rules.
public struct NewJob: Sendable, Hashable {
    /// Which handler runs it, for example `stripe.event`.
    public var kind: String
    /// The handler's input: a JSON object, as text.
    public var payload: String
    public var queue: String
    /// Lower runs first.
    public var priority: Int
    /// Not claimed before this time; nil means now.
    public var runAt: Date?
    /// Nil takes the kind's default (`sluice.kinds`, else 20).
    public var maxAttempts: Int?
    /// While a job with this key waits, runs, or completed within the retention period, enqueueing the
    /// same key returns that job's id instead of adding another.
    public var uniqueKey: String?

    public init(
        kind: String,
        payload: String = "{}",
        queue: String = "default",
        priority: Int = 0,
        runAt: Date? = nil,
        maxAttempts: Int? = nil,
        uniqueKey: String? = nil
    ) {
        self.kind = kind
        self.payload = payload
        self.queue = queue
        self.priority = priority
        self.runAt = runAt
        self.maxAttempts = maxAttempts
        self.uniqueKey = uniqueKey
    }
}
