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

/// What proves a worker still holds a job: its id, the attempt, and the claim's holder token.
///
/// Every completion, failure, release and heartbeat names the lease it acts for, and PostgreSQL applies it
/// only while `locked_by` still holds that claim's token: a worker whose lease was rescued and handed to
/// another cannot finish the job that the other now runs, and a worker that claims the same job again
/// (after a snooze or a timeout) cannot mistake an outcome of its earlier claim for the new one.
public struct JobLease: Sendable, Hashable {
    public var id: Int64
    public var attempt: Int
    /// The `locked_by` value the claim set: `host:pid:nonce/claim`, unique per claim statement.
    public var holder: String

    public init(id: Int64, attempt: Int, holder: String) {
        self.id = id
        self.attempt = attempt
        self.holder = holder
    }
}

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

/// What a recorded failure did to its job.
public struct FailureOutcome: Sendable, Hashable {
    public enum Result: String, Sendable {
        /// Back in the queue, to run after its backoff.
        case retried
        /// Moved to `sluice.dead_letters`.
        case dead
    }

    public var id: Int64
    public var result: Result

    public init(id: Int64, result: Result) {
        self.id = id
        self.result = result
    }
}

/// What one run of the rescuer did.
public struct RescueReport: Sendable, Hashable {
    /// Jobs whose lease expired and that went back to the queue.
    public var rescued: [Int64] = []
    /// Jobs whose lease expired on their last attempt and that went to the dead letters.
    public var dead: [Int64] = []

    public init(rescued: [Int64] = [], dead: [Int64] = []) {
        self.rescued = rescued
        self.dead = dead
    }
}
