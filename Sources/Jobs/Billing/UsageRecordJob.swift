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

    static let record = PreparedStatement(
        name: "billing_usage_record",
        sql: """
            SELECT allowed, used, remaining
            FROM billing.record_usage(billing.text_at($1::jsonb, '{user_id}', true),
                                      billing.text_at($1::jsonb, '{feature}', true),
                                      billing.bigint_at($1::jsonb, '{quantity}', true),
                                      coalesce(billing.text_at($1::jsonb, '{idempotency_key}'), 'usage.record:' || $2))
            """)

    public func handle(_ job: ClaimedJob, context: JobContext) throws -> JobOutcome {
        do {
            let answer = try context.connection().execute(
                Self.record, [job.payload, job.id], context: "recording usage"
            ).single()
            let allowed = try answer.decode(Bool.self, at: 0)
            let used = try answer.decode(Int64.self, at: 1)
            context.logger.debug("Usage recorded", metadata: ["allowed": "\(allowed)", "used": "\(used)"])
            return .success
        } catch let error as PostgresError where error.isDataException {
            throw JobError.permanent("the usage cannot be recorded: \(error.message)")
        }
    }
}
