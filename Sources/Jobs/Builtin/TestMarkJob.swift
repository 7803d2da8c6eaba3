import Foundation
public import PGQueue

/// `sluice.test.mark`, registered only with `SLUICE_TEST_JOBS=1`: sleeps `sleep_ms` (only on attempts up
/// to `sleep_attempts`, when given), then inserts `(job_id, attempt)` into `sluice_test.marks` in the job's
/// own transaction, with the job's `created_at` and the time the handler started (for latency figures).
///
/// Fault tests count the marks: exactly one per job proves that completion and the handler's writes
/// commit together, and that an attempt whose lease was lost (a hung or stopped worker) left nothing.
public struct TestMarkJob: JobHandler {
    public let kind = "sluice.test.mark"
    public let usesTransaction = true

    public init() {}

    struct Payload: Decodable {
        var sleepMilliseconds: Int?
        var sleepAttempts: Int?

        enum CodingKeys: String, CodingKey {
            case sleepMilliseconds = "sleep_ms"
            case sleepAttempts = "sleep_attempts"
        }
    }

    public func handle(_ job: ClaimedJob, context: JobContext) throws -> JobOutcome {
        let started = Date()
        let payload = try JSONDecoder().decode(Payload.self, from: Data(job.payload.utf8))
        if let sleep = payload.sleepMilliseconds, sleep > 0, job.attempt <= payload.sleepAttempts ?? .max {
            Thread.sleep(forTimeInterval: Double(sleep) / 1000)
        }
        try context.connection().query(
            """
            INSERT INTO sluice_test.marks (job_id, attempt, enqueued_at, started_at)
            VALUES ($1, $2, $3, $4)
            """,
            [job.id, job.attempt, job.createdAt, started], context: "marking a test job")
        return .success
    }
}
