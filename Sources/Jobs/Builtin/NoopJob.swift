import Foundation
public import PGQueue

/// `sluice.noop`: a job that does nothing, for smoke tests, benchmarks and checking a deployment.
///
/// Payload `{}` succeeds at once; `{"sleep_ms": n}` sleeps first (at most a second unless test jobs are
/// enabled); `{"fail_attempts": n}` fails its first n
/// attempts; `{"permanent": true}` fails permanently; `{"crash": true}` aborts the process, honoured only
/// when the pool was started with test jobs enabled (`SLUICE_TEST_JOBS=1`), for crash-safety tests.
public struct NoopJob: JobHandler {
    public let kind = "sluice.noop"
    /// The longest `sleep_ms` honoured without `SLUICE_TEST_JOBS=1`.
    public static let maximumSleepMilliseconds = 1000
    /// Whether `{"crash": true}` may abort the process.
    public let allowsCrash: Bool
    public let timeoutSeconds: Double
    public let backoff: Backoff

    public init(allowsCrash: Bool = false, timeoutSeconds: Double = 300, backoff: Backoff = .standard) {
        self.allowsCrash = allowsCrash
        self.timeoutSeconds = timeoutSeconds
        self.backoff = backoff
    }

    struct Payload: Decodable {
        var sleepMilliseconds: Int?
        var failAttempts: Int?
        var permanent: Bool?
        var crash: Bool?

        enum CodingKeys: String, CodingKey {
            case sleepMilliseconds = "sleep_ms"
            case failAttempts = "fail_attempts"
            case permanent, crash
        }
    }

    public func handle(_ job: ClaimedJob, context: JobContext) throws -> JobOutcome {
        // The benchmark's jobs carry "{}": skip decoding for them.
        guard job.payload != "{}" else { return .success }
        let payload: Payload
        do {
            payload = try JSONDecoder().decode(Payload.self, from: Data(job.payload.utf8))
        } catch {
            throw JobError.permanent("sluice.noop payload is not {sleep_ms, fail_attempts, permanent, crash}: \(error)")
        }
        if payload.crash == true {
            guard allowsCrash else {
                throw JobError.permanent("sluice.noop {\"crash\": true} needs SLUICE_TEST_JOBS=1; refusing to crash")
            }
            context.logger.warning("sluice.noop crashing the process on purpose (SLUICE_TEST_JOBS=1)")
            abort()
        }
        if let sleep = payload.sleepMilliseconds, sleep > 0 {
            // A smoke test needs no long sleep; only test deployments may hold a slot for as long as they ask.
            let capped = allowsCrash ? sleep : min(sleep, Self.maximumSleepMilliseconds)
            Thread.sleep(forTimeInterval: Double(capped) / 1000)
        }
        if payload.permanent == true {
            throw JobError.permanent("sluice.noop asked to fail permanently")
        }
        if let failures = payload.failAttempts, job.attempt <= failures {
            throw JobError.retryable("sluice.noop failing attempt \(job.attempt) of \(failures) on purpose")
        }
        return .success
    }
}
