public import Logging
public import PGQueue

/// Runs one kind of job.
///
/// The pool calls `handle` on a thread of its own (never on Swift concurrency's shared pool), so a
/// handler may block: on the database, on the network, on `Thread.sleep`. Return to complete the job;
/// throw to fail this attempt (``JobError/permanent(_:)`` skips the retries); return
/// ``JobOutcome/snooze(seconds:)`` to run it again later without spending an attempt.
///
/// A handler whose ``usesTransaction`` is true runs inside a transaction on `context.connection`, and the
/// pool completes the job in that same transaction: its writes and the completion commit together or not
/// at all (exactly-once effects), and a handler whose lease was lost meanwhile has its writes rolled back.
public protocol JobHandler: Sendable {
    /// The `kind` this handler runs, for example `stripe.event`.
    var kind: String { get }
    /// How long one attempt may run before it counts as failed (DESIGN.md: 5 minutes by default).
    var timeoutSeconds: Double { get }
    /// The wait between failed attempts.
    var backoff: Backoff { get }
    /// True to run inside a transaction that also completes the job.
    var usesTransaction: Bool { get }

    /// Runs one attempt of `job`.
    func handle(_ job: ClaimedJob, context: JobContext) throws -> JobOutcome
}

extension JobHandler {
    public var timeoutSeconds: Double { 300 }
    public var backoff: Backoff { .standard }
    public var usesTransaction: Bool { false }
}

/// What a handler decided.
public enum JobOutcome: Sendable, Hashable {
    /// Done: the job is completed.
    case success
    /// Run again after `seconds` with the attempt given back: the handler waits on something, it did not fail.
    case snooze(seconds: Double)
}

/// What a handler gets besides the job.
public struct JobContext {
    /// The connection of the thread running the handler; inside the job's transaction when the handler
    /// `usesTransaction`. Opened on first use.
    public let connection: () throws -> PostgresConnection
    private let makeLogger: @Sendable () -> Logger

    /// A logger with the job's id, kind, queue and attempt as metadata.
    public var logger: Logger { makeLogger() }

    /// - Parameter makeLogger: builds the job's logger when a handler first logs; most never do.
    public init(connection: @escaping () throws -> PostgresConnection, makeLogger: @escaping @Sendable () -> Logger) {
        self.connection = connection
        self.makeLogger = makeLogger
    }
}

/// A failure that a handler throws to say more than "retry later".
public struct JobError: Error, Sendable, CustomStringConvertible {
    /// True when retrying cannot help: the job goes straight to the dead letters.
    public var isPermanent: Bool
    public var message: String
    /// When set, the wait before the next attempt instead of the handler's backoff (a schedule of its own,
    /// a `Retry-After`), in seconds.
    public var retryAfter: Double?

    /// Retrying cannot help (a payload that cannot be read, an object that will never exist).
    public static func permanent(_ message: String) -> JobError {
        JobError(isPermanent: true, message: message, retryAfter: nil)
    }

    /// A failure worth retrying after the backoff.
    public static func retryable(_ message: String) -> JobError {
        JobError(isPermanent: false, message: message, retryAfter: nil)
    }

    /// A failure worth retrying after `seconds` rather than the backoff.
    public static func retryable(_ message: String, after seconds: Double) -> JobError {
        JobError(isPermanent: false, message: message, retryAfter: max(0, seconds))
    }

    public var description: String { message }
}
