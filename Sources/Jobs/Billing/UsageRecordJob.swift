public import PGQueue

/// `usage.record`: `billing.record_usage` through the queue, for callers that prefer to enqueue.
///
/// Payload: `{"user_id": "...", "feature": "...", "quantity": 1, "idempotency_key": "..."}`; without an
/// `idempotency_key` the job's id stands in, so a retried job never counts twice. A denied use is an
/// answer, not a failure: it is recorded in `billing.usage_events` like any other. A payload with a
/// missing or wrong-typed field fails permanently, naming the field.
public struct UsageRecordJob: JobHandler {
    public let kind = "usage.record"
    public let usesTransaction = true

    public init() {}

    public func handle(_ job: ClaimedJob, context: JobContext) throws -> JobOutcome {
        do {
            let answer = try BillingStore(context.connection()).recordUsage(
                payload: job.payload, fallbackKey: "usage.record:\(job.id)")
            context.logger.debug(
                "Usage recorded", metadata: ["usage.allowed": "\(answer.allowed)", "usage.used": "\(answer.used)"])
            return .success
        } catch let error as PostgresError where error.isDataException {
            throw JobError.permanent("the usage cannot be recorded: \(error.message)")
        }
    }
}
