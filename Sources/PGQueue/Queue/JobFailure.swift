public import Foundation

/// A failed attempt to record.
public struct JobFailure: Sendable, Hashable {
    /// Why an attempt failed, as recorded in the job's error history.
    public enum Kind: String, Sendable {
        /// The handler threw; retried after a backoff.
        case error
        /// The handler ran past its kind's execution timeout; retried after a backoff.
        case timeout
        /// The handler said retrying cannot help (or the payload could not be read): dead letter at once.
        case permanent
    }

    public var lease: JobLease
    public var kind: Kind
    /// What went wrong, for operators: no secrets or payload values.
    public var message: String
    /// How long to wait before the next attempt, when there is one.
    public var retryIn: TimeInterval

    public init(lease: JobLease, kind: Kind, message: String, retryIn: TimeInterval) {
        self.lease = lease
        self.kind = kind
        self.message = message
        self.retryIn = retryIn
    }
}
