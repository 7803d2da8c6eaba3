import Foundation
import Synchronization

/// The queue operations of Sluice, run on a connection the caller owns.
///
/// `JobQueue` holds only settings, so it is `Sendable` and shared freely; each operation takes the
/// `PostgresConnection` of the calling thread. An operation inside `connection.transaction { … }` is part
/// of that transaction: a handler can enqueue follow-up jobs, or complete its own job, atomically with
/// its writes.
///
/// ```swift
/// let queue = JobQueue()
/// let connection = try PostgresConnection(connectionString: url)
/// let id = try queue.enqueue(NewJob(kind: "sluice.noop"), on: connection)
/// let jobs = try queue.claim(from: "default", limit: 10, on: connection)
/// try queue.complete(jobs.map(\.lease), on: connection)
/// ```
public struct JobQueue: Sendable {
    /// Identifies this worker process in `locked_by`; unique per process start, so a restarted process
    /// never mistakes its predecessor's leases for its own.
    public var workerID: String
    /// How long a claim or heartbeat holds a job before the rescuer may take it back, in seconds.
    public var leaseSeconds: Double
    /// How long a completed job's unique key keeps absorbing duplicates, in seconds.
    public var uniqueRetentionSeconds: Double

    public init(
        workerID: String = JobQueue.makeWorkerID(),
        leaseSeconds: Double = 30,
        uniqueRetentionSeconds: Double = 7 * 24 * 3600
    ) {
        self.workerID = workerID
        self.leaseSeconds = leaseSeconds
        self.uniqueRetentionSeconds = uniqueRetentionSeconds
    }

    /// Settings for a connection that runs only queue statements (claims, completions, enqueues): pass
    /// them to ``PostgresConnection/init(connectionString:logger:sessionSettings:)``.
    ///
    /// A statement is planned once per connection (a generic plan), from the table's statistics at that
    /// moment. Plans made while the queue was empty, or looked empty to autovacuum, went wrong when a
    /// million jobs arrived, until the next ANALYZE:
    /// - completions scanned the whole table, and the queue drained at a fifth of its speed;
    /// - the claim scanned every waiting job with a bitmap and sorted them all under its LIMIT (half a
    ///   second a claim, spilling to disk), and the queue drained at twenty jobs a second.
    ///
    /// `enable_seqscan = off` and `enable_bitmapscan = off` leave plain index scans: the claim walks
    /// `jobs_claim_order` in its order and stops at its LIMIT, and completions find their jobs by primary
    /// key, at any depth. (Planning every statement afresh instead, `plan_cache_mode =
    /// force_custom_plan`, drained a burn-down at a third of the speed: each completion was planned with
    /// its thousands of ids.)
    public static let sessionSettings: [(name: String, value: String)] = [
        ("enable_seqscan", "off"), ("enable_bitmapscan", "off"),
    ]

    /// Numbers this process's claims, so each claim's `locked_by` token is unique.
    private let claimSequence = ClaimSequence()

    /// The `locked_by` token for the next claim: the worker id and a number that only grows.
    func nextHolder() -> String {
        "\(workerID)/\(claimSequence.next())"
    }

    /// `host:pid:nonce`, readable in `sluice.jobs.locked_by` and unique per process start.
    public static func makeWorkerID() -> String {
        let host = ProcessInfo.processInfo.hostName.split(separator: ".").first.map(String.init) ?? "host"
        let nonce = String(UInt32.random(in: 0...UInt32.max), radix: 36)
        return "\(host):\(ProcessInfo.processInfo.processIdentifier):\(nonce)"
    }

    /// The channel `sluice.enqueue` notifies, with the queue's name as payload.
    public static let notificationChannel = "sluice_jobs"
}

/// A counter shared by every copy of a `JobQueue`.
final class ClaimSequence: Sendable {
    private let value = Atomic<Int>(0)

    func next() -> Int {
        value.add(1, ordering: .relaxed).newValue
    }
}
