import Foundation
import Jobs
import Logging
import PGQueue

/// Thrown inside a job's transaction when its completion was fenced off, to roll the handler's writes back.
private struct LeaseLost: Error {}

/// What one attempt ended with, to hand to the flusher once the slot has checked it is still wanted.
enum AttemptResult: Sendable {
    case complete(OutcomeFlusher.Completion)
    case fail(OutcomeFlusher.Failure)
    case snooze(OutcomeFlusher.Snooze)
    /// Already recorded in the job's own transaction, or nothing to record (lease lost).
    case recorded
}

extension WorkerPool {
    /// Runs one attempt on the slot's queue. A handler that uses the job's transaction commits its outcome
    /// with its writes here; any other outcome is returned for the flusher.
    func execute(_ job: ClaimedJob, on slot: Slot) -> AttemptResult {
        let started = ContinuousClock.now
        // Building a logger with the job's metadata costs allocations; only pay when something is logged.
        let baseLogger = self.logger
        let makeLogger = { @Sendable () -> Logger in
            var logger = baseLogger
            logger[metadataKey: "job.id"] = "\(job.id)"
            logger[metadataKey: "job.kind"] = "\(job.kind)"
            logger[metadataKey: "job.queue"] = "\(job.queue)"
            logger[metadataKey: "job.attempt"] = "\(job.attempt)"
            return logger
        }

        guard let handler = registry.handler(for: job.kind) else {
            makeLogger().error("No handler for this job kind; failing it permanently")
            return .fail(
                .init(
                    failure: JobFailure(
                        lease: job.lease, kind: .permanent,
                        message:
                            "no handler for kind \(job.kind) in this worker; it runs \(registry.kinds.joined(separator: ", "))",
                        retryIn: 0),
                    queue: job.queue, kind: job.kind))
        }

        if logger.logLevel <= .debug { makeLogger().debug("Job started") }
        let result: AttemptResult
        do {
            if handler.usesTransaction {
                try runInTransaction(job, handler: handler, slot: slot, makeLogger: makeLogger)
                result = .recorded
            } else {
                let context = JobContext(connection: { try slot.openConnection() }, makeLogger: makeLogger)
                switch try handler.handle(job, context: context) {
                case .success:
                    result = .complete(.init(lease: job.lease, queue: job.queue, kind: job.kind))
                case .snooze(let seconds):
                    result = .snooze(.init(lease: job.lease, delay: seconds))
                    metrics.snoozed(queue: job.queue, kind: job.kind)
                }
            }
            if logger.logLevel <= .debug {
                makeLogger().debug("Job finished", metadata: ["duration_ms": "\(milliseconds(since: started))"])
            }
        } catch is LeaseLost {
            makeLogger().info("Lease lost while the job ran; its writes were rolled back")
            result = .recorded
        } catch {
            let permanent = (error as? JobError)?.isPermanent ?? false
            let delay = (error as? JobError)?.retryAfter ?? handler.backoff.delay(afterAttempt: job.attempt)
            let message = (error as? PostgresError).map { $0.description } ?? "\(error)"
            makeLogger().info(
                permanent || job.isLastAttempt ? "Job failed for good" : "Job failed; will retry",
                metadata: [
                    "error": "\(message)", "duration_ms": "\(milliseconds(since: started))",
                    "retry_in_s": permanent ? "none" : "\(String(format: "%.1f", delay))",
                ])
            result = .fail(
                .init(
                    failure: JobFailure(
                        lease: job.lease, kind: permanent ? .permanent : .error, message: message, retryIn: delay),
                    queue: job.queue, kind: job.kind))
        }
        slot.recordDuration(kind: job.kind, nanoseconds: (ContinuousClock.now - started).nanoseconds, metrics: metrics)
        return result
    }

    private func runInTransaction(
        _ job: ClaimedJob, handler: any JobHandler, slot: Slot, makeLogger: @escaping @Sendable () -> Logger
    ) throws {
        let connection = try slot.openConnection()
        let queue = self.queue
        // Should the timeout check fail this attempt meanwhile, whichever statement commits first wins and
        // the other is fenced off: a fenced completion rolls the handler's writes back.
        let outcome = try connection.transaction(context: "running \(job.kind) job \(job.id)") { transaction in
            let context = JobContext(connection: { transaction }, makeLogger: makeLogger)
            let outcome = try handler.handle(job, context: context)
            switch outcome {
            case .success:
                if try queue.complete([job.lease], on: transaction).isEmpty { throw LeaseLost() }
            case .snooze(let seconds):
                if try !queue.snooze(job.lease, for: seconds, on: transaction) { throw LeaseLost() }
            }
            return outcome
        }
        switch outcome {
        case .success: metrics.completed(queue: job.queue, kind: job.kind, count: 1)
        case .snooze: metrics.snoozed(queue: job.queue, kind: job.kind)
        }
    }

    private func milliseconds(since start: ContinuousClock.Instant) -> Int64 {
        (ContinuousClock.now - start).nanoseconds / 1_000_000
    }
}
