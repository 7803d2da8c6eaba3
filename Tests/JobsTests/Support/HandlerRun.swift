import Foundation
import Jobs
import Logging
import PGQueue
import Synchronization
import TestKit

/// Runs jobs through the standard handlers in this process, on a database of their own: deliveries are
/// enqueued in the given order, then threads claim, run and record each attempt until no job is left.
///
/// Each attempt takes the pool's steps (a handler that uses the job's transaction completes in it; a
/// snooze gives the attempt back; a failure waits out the handler's backoff, or dies when permanent)
/// without the pool's threads, prefetch and timers, which the worker's own tests cover.
struct HandlerRun: DatabaseUnderTest {
    let database: TestDatabase

    init() throws {
        database = try TestDatabase()
    }

    var url: String { database.url }

    /// Enqueues `deliveries` in order, then runs every job on `concurrency` threads until none is left.
    ///
    /// - Returns: one line per failed attempt, for a failing expectation to print.
    @discardableResult
    func process(_ deliveries: [BillingEvents.Delivery], concurrency: Int = 1, stripeMode: String? = nil) throws
        -> String
    {
        let connection = try connect()
        for delivery in deliveries { try JobQueue().enqueue(delivery.job, on: connection) }
        let registry = StandardJobs.registry(
            testJobs: true, stripeMode: stripeMode, stripe: StripeSettings(apiKey: nil),
            verifiers: WebhookVerifiers([
                .stripe: try StripeSignatureVerifier(secrets: [WebhookSigning.stripeSecret]),
                .clerk: try SvixSignatureVerifier(secrets: [WebhookSigning.clerkSecret]),
            ]))
        let failures = Mutex<[String]>([])
        let deadline = ContinuousClock.now + .seconds(60)
        try onThreads(concurrency) { _ in
            let connection = try connect()
            let queue = JobQueue()
            while ContinuousClock.now < deadline {
                let claimed = try queue.activeQueues(on: connection).flatMap {
                    try queue.claim(from: $0, limit: 1, on: connection)
                }
                for job in claimed {
                    if let failure = try Self.attempt(job, registry: registry, queue: queue, on: connection) {
                        failures.withLock { $0.append("job \(job.id) \(job.kind) attempt \(job.attempt): \(failure)") }
                    }
                }
                if claimed.isEmpty {
                    if try connection.query("SELECT count(*) FROM sluice.jobs", context: "counting").single().decode(
                        Int.self, at: 0) == 0
                    {
                        return
                    }
                    Thread.sleep(forTimeInterval: 0.01)
                }
            }
        }
        let log = failures.withLock { $0.joined(separator: "\n") }
        guard try count("SELECT count(*) FROM sluice.jobs") == 0 else {
            throw ScriptFailure(description: "jobs left in the queue after 60 s:\n\(log)")
        }
        return log
    }

    /// Runs one attempt and records its outcome; returns the failure's message, if it failed.
    private static func attempt(
        _ job: ClaimedJob, registry: JobRegistry, queue: JobQueue, on connection: PostgresConnection
    ) throws -> String? {
        guard let handler = registry.handler(for: job.kind) else {
            let message = "no handler for kind \(job.kind)"
            try queue.fail(
                [JobFailure(lease: job.lease, kind: .permanent, message: message, retryIn: 0)], on: connection)
            return message
        }
        let context = { (connection: PostgresConnection) in
            JobContext(connection: { connection }, makeLogger: { Logger(label: "test") })
        }
        do {
            if handler.usesTransaction {
                try connection.transaction(context: "running \(job.kind)") { transaction in
                    try record(
                        handler.handle(job, context: context(transaction)), of: job, queue: queue, on: transaction)
                }
            } else {
                try record(handler.handle(job, context: context(connection)), of: job, queue: queue, on: connection)
            }
            return nil
        } catch {
            let message = (error as? PostgresError).map { $0.description } ?? "\(error)"
            let permanent = (error as? JobError)?.isPermanent ?? false
            try queue.fail(
                [
                    JobFailure(
                        lease: job.lease, kind: permanent ? .permanent : .error, message: message,
                        retryIn: handler.backoff.delay(afterAttempt: job.attempt))
                ], on: connection)
            return message
        }
    }

    private static func record(
        _ outcome: JobOutcome, of job: ClaimedJob, queue: JobQueue, on connection: PostgresConnection
    ) throws {
        switch outcome {
        case .success: _ = try queue.complete([job.lease], on: connection)
        case .snooze(let seconds): _ = try queue.snooze(job.lease, for: seconds, on: connection)
        }
    }

    /// Every billing table but the audit log, as text, without the columns that record when a row was
    /// written or which event got somewhere first: two runs of the same events must give the same text.
    func state() throws -> String {
        let connection = try connect()
        var tables: [String] = []
        for (table, volatile) in [
            ("users", ["updated_at"]), ("customers", ["updated_at"]),
            ("customer_links", ["linked_at", "linked_by", "event_id"]),
            ("products", ["updated_at"]), ("prices", ["updated_at"]), ("subscriptions", ["updated_at"]),
            ("subscription_status_history", []), ("invoices", ["updated_at"]), ("charges", ["updated_at"]),
            ("disputes", ["updated_at"]), ("processed_events", ["processed_at"]),
        ] {
            let strip = volatile.map { " - '\($0)'" }.joined()
            let rows = try connection.query(
                "SELECT coalesce(jsonb_agg(to_jsonb(t)\(strip) ORDER BY (to_jsonb(t)\(strip))::text), '[]')::text FROM billing.\(table) t",
                context: "reading billing.\(table)"
            ).single().decode(String.self, at: 0)
            tables.append("\(table): \(rows)")
        }
        return tables.joined(separator: "\n")
    }
}
