import Foundation
import Logging
import PGQueue
import Synchronization

/// Records what handlers finished with, in batches: one statement for all completions, one for all
/// failures and one for all snoozes that arrived since the last flush.
///
/// Runs on a thread of its own with its own connection. Under load, outcomes pile up while a flush runs
/// and go out together in the next one; when idle, an outcome goes out within a millisecond or two. A
/// flush that fails is kept and tried again, so no outcome is dropped; if its lease expires meanwhile, the
/// job is rescued and runs again (at least once).
final class OutcomeFlusher: Sendable {
    struct Completion: Sendable {
        var lease: JobLease
        var queue: String
        var kind: String
    }

    struct Failure: Sendable {
        var failure: JobFailure
        var queue: String
        var kind: String
    }

    struct Snooze: Sendable {
        var lease: JobLease
        var delay: Double
    }

    private struct Pending: Sendable {
        var completions: [Completion] = []
        var failures: [Failure] = []
        var snoozes: [Snooze] = []
        var isEmpty: Bool { completions.isEmpty && failures.isEmpty && snoozes.isEmpty }
    }

    private let pending = Mutex(Pending())
    private let isStopped = Atomic<Bool>(false)
    private let wake = WakeSignal()
    private let finished = DispatchSemaphore(value: 0)
    private let queue: JobQueue
    private let connectionString: String?
    private let metrics: SluiceMetrics
    private let logger: Logger

    /// Called with the delays of the retries and snoozes a flush recorded, counted from the flush.
    private let onScheduled: @Sendable ([Double]) -> Void

    init(
        queue: JobQueue, connectionString: String?, metrics: SluiceMetrics, logger: Logger,
        onScheduled: @escaping @Sendable ([Double]) -> Void
    ) {
        self.queue = queue
        self.connectionString = connectionString
        self.metrics = metrics
        self.logger = logger
        self.onScheduled = onScheduled
    }

    func start() {
        let thread = Thread { [self] in run() }
        thread.name = "sluice.flusher"
        thread.start()
    }

    /// Queues the outcomes of a chunk of attempts, under one lock.
    func submit(_ results: [AttemptResult]) {
        var added = false
        pending.withLock { pending in
            for result in results {
                switch result {
                case .complete(let completion): pending.completions.append(completion)
                case .fail(let failure): pending.failures.append(failure)
                case .snooze(let snooze): pending.snoozes.append(snooze)
                case .recorded: continue
                }
                added = true
            }
        }
        if added { wake.signal() }
    }

    /// Gives jobs back to the queue at once, their attempt returned: claimed here, never started.
    func release(_ leases: [JobLease]) {
        pending.withLock { $0.snoozes += leases.map { Snooze(lease: $0, delay: 0) } }
        wake.signal()
    }

    func fail(_ failure: Failure) {
        pending.withLock { $0.failures.append(failure) }
        wake.signal()
    }

    /// Counts and logs the completions a flush recorded.
    private func recordCompleted(_ completions: [Completion], completed: [Int64]) {
        guard !completions.isEmpty else { return }
        let done = Set(completed)
        var counts: [String: (queue: String, kind: String, count: Int)] = [:]
        for completion in completions {
            if done.contains(completion.lease.id) {
                counts["\(completion.queue)\u{0}\(completion.kind)", default: (completion.queue, completion.kind, 0)]
                    .count += 1
            } else {
                logger.info(
                    "Completion fenced off: the lease was lost before it was recorded",
                    metadata: ["job.id": "\(completion.lease.id)", "job.kind": "\(completion.kind)"])
            }
        }
        for group in counts.values { metrics.completed(queue: group.queue, kind: group.kind, count: group.count) }
    }

    /// Flushes what is pending, releases `leases` (a graceful stop's unfinished jobs) and stops, waiting
    /// at most `timeout` seconds.
    func stop(releasing leases: [JobLease], timeout: Double) {
        release(leases)
        isStopped.store(true, ordering: .releasing)
        wake.signal()
        if finished.wait(timeout: .now() + timeout) == .timedOut {
            logger.warning("Outcomes not flushed before the stop timeout; their jobs will be rescued and run again")
        }
    }

    private func run() {
        var connection: PostgresConnection?
        var retryDelay = 0.05
        while true {
            let stopping = isStopped.load(ordering: .acquiring)
            var batch = pending.withLock { pending in
                let batch = pending
                pending = Pending()
                return batch
            }
            if batch.isEmpty {
                if stopping { break }
                wake.wait(timeout: 1)
                continue
            }
            do {
                let open =
                    try connection
                    ?? PostgresConnection(
                        connectionString: connectionString, logger: logger, sessionSettings: JobQueue.sessionSettings)
                connection = open
                try flush(&batch, on: open)
                retryDelay = 0.05
            } catch let error as PostgresError where !error.isTransient {
                // PostgreSQL refused the statement itself; sending it again would fail again and block
                // every later outcome. The leases of these jobs expire and the rescuer returns them, so
                // they run again rather than vanish.
                logger.error(
                    "Could not record job outcomes; dropping this batch, its jobs will be rescued when their leases expire",
                    metadata: [
                        "error": "\(error.debugDescription)", "completions.count": "\(batch.completions.count)",
                        "failures.count": "\(batch.failures.count)", "snoozes.count": "\(batch.snoozes.count)",
                    ])
            } catch {
                // Put back what the flush did not record, in front of anything newer, and try again shortly.
                pending.withLock { pending in
                    pending.completions = batch.completions + pending.completions
                    pending.failures = batch.failures + pending.failures
                    pending.snoozes = batch.snoozes + pending.snoozes
                }
                logger.warning(
                    "Could not record job outcomes; retrying",
                    metadata: ["error": "\(error)", "retry_in_s": "\(retryDelay)"])
                if stopping && retryDelay > 2 { break }
                Thread.sleep(forTimeInterval: retryDelay)
                retryDelay = min(retryDelay * 2, 5)
            }
        }
        connection?.close()
        finished.signal()
    }

    /// Records the batch, one statement per kind of outcome, emptying each part of `batch` once its
    /// statement committed: a retry after a later statement failed sends only what is still unrecorded.
    private func flush(_ batch: inout Pending, on connection: PostgresConnection) throws(PostgresError) {
        if !batch.completions.isEmpty {
            let completed = try queue.complete(batch.completions.map(\.lease), on: connection)
            recordCompleted(batch.completions, completed: completed)
            batch.completions = []
        }
        if !batch.failures.isEmpty {
            let outcomes = try queue.fail(batch.failures.map(\.failure), on: connection)
            let byID = Dictionary(outcomes.map { ($0.id, $0.result) }, uniquingKeysWith: { first, _ in first })
            let retries = batch.failures.filter { byID[$0.failure.lease.id] == .retried }.map(\.failure.retryIn)
            if !retries.isEmpty { onScheduled(retries) }
            for failure in batch.failures {
                switch byID[failure.failure.lease.id] {
                case .retried:
                    metrics.failed(queue: failure.queue, kind: failure.kind)
                case .dead:
                    metrics.deadLettered(queue: failure.queue, kind: failure.kind)
                    logger.warning(
                        "Job moved to dead letters",
                        metadata: [
                            "job.id": "\(failure.failure.lease.id)", "job.kind": "\(failure.kind)",
                            "job.queue": "\(failure.queue)", "job.attempt": "\(failure.failure.lease.attempt)",
                            "error": "\(failure.failure.message)",
                        ])
                case nil:
                    logger.info(
                        "Failure fenced off: the lease was lost before it was recorded",
                        metadata: ["job.id": "\(failure.failure.lease.id)", "job.kind": "\(failure.kind)"])
                }
            }
            batch.failures = []
        }
        if !batch.snoozes.isEmpty {
            try queue.release(batch.snoozes.map(\.lease), delays: batch.snoozes.map(\.delay), on: connection)
            onScheduled(batch.snoozes.map(\.delay))
            batch.snoozes = []
        }
    }
}
