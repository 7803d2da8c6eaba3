public import Foundation

/// A job claimed by this worker, with everything a handler needs.
public struct ClaimedJob: Sendable, Hashable {
    public var id: Int64
    public var queue: String
    public var kind: String
    /// The payload as JSON text.
    public var payload: String
    public var priority: Int
    /// This attempt's number, starting at 1.
    public var attempt: Int
    public var maxAttempts: Int
    public var uniqueKey: String?
    public var runAt: Date
    public var createdAt: Date
    /// The token of the claim that leased this attempt (`locked_by`).
    public var holder: String

    /// The lease to name when completing, failing or releasing this attempt.
    public var lease: JobLease { JobLease(id: id, attempt: attempt, holder: holder) }
    /// True when a failure of this attempt sends the job to the dead letters.
    public var isLastAttempt: Bool { attempt >= maxAttempts }
}
