import DequeModule
import Foundation
import Logging
import PGQueue
import Synchronization

/// Commits webhook jobs to PostgreSQL in groups, so that a burst of requests costs one commit (one WAL
/// flush) per group instead of one per request, while each request still waits for its own row.
///
/// Requests queue up in `pending`. Each writer thread takes everything pending (up to a batch limit),
/// commits it with one `sluice.enqueue_unique` statement, and answers every request of the batch. While
/// one writer waits for its commit, requests arriving meanwhile gather for the next writer: the batch grows
/// with the load and no request waits for a timer. A request is answered `unavailable` when the database
/// fails, when it waited `answerTimeout` seconds, or when too much is already pending; the sender then
/// retries, and the unique key absorbs a retry whose first try did commit.
final class GroupCommitter: @unchecked Sendable {
    // Safety: `pending`, `pendingBytes`, `inFlight` and `isStopping` are read and written only with
    // `condition` locked;
    // each writer's connection is confined to its own thread.

    /// How one request's row fared.
    enum Result: Sendable, Equatable {
        case enqueued(jobID: Int64)
        case duplicate(jobID: Int64)
        /// Not committed; the reason is for logs, never holds the payload.
        case unavailable(reason: String)
    }

    struct Settings: Sendable {
        var connectionString: String?
        /// Writer threads, each with one connection: while one commits, the next group gathers.
        var writers = 2
        var maxBatchJobs = 1_000
        var maxBatchBytes = 16 << 20
        /// Requests waiting beyond these are answered `unavailable` at once: memory stays bounded when the
        /// database falls behind.
        var maxPending = 20_000
        var maxPendingBytes = 256 << 20
        /// A request not committed within this many seconds is answered `unavailable`.
        var answerTimeout: Double = 10
    }

    private struct Submission {
        var job: NewJob
        var answer: Answer
        var submittedAt: Double
    }

    private let settings: Settings
    private let logger: Logger
    private let queue = JobQueue()
    private let condition = NSCondition()
    private var pending = Deque<Submission>()
    private var pendingBytes = 0
    private var inFlight: [Int: (startedAt: Double, answers: [Answer])] = [:]
    private var isStopping = false
    private let stopped = DispatchGroup()
    private let failureLog = FailureLog()
    private var sweeper: (any DispatchSourceTimer)?

    init(settings: Settings, logger: Logger) {
        self.settings = settings
        self.logger = logger
    }

    /// Starts the writer threads and the timeout sweeper.
    func start() {
        for index in 0..<settings.writers {
            stopped.enter()
            let thread = Thread { [self] in
                writerLoop(index)
                stopped.leave()
            }
            thread.name = "sluice-commit-\(index)"
            thread.start()
        }
        let timer = DispatchSource.makeTimerSource(queue: DispatchQueue(label: "sluice.commit.sweeper"))
        timer.schedule(deadline: .now() + 0.25, repeating: 0.25)
        timer.setEventHandler { [weak self] in self?.answerOverdue() }
        timer.resume()
        sweeper = timer
    }

    /// Commits what is pending, then stops the writers; call after the HTTP server stopped taking requests.
    func stop() {
        condition.lock()
        isStopping = true
        condition.broadcast()
        condition.unlock()
        stopped.wait()
        sweeper?.cancel()
    }

    /// Queues `job` (which has a unique key) for the next group commit and waits for its answer.
    func submit(_ job: NewJob) async -> Result {
        await withCheckedContinuation { continuation in
            submit(job) { continuation.resume(returning: $0) }
        }
    }

    /// Queues `job` (which has a unique key) for the next group commit; `answer` is called once, on a
    /// writer or sweeper thread, or at once when the job is refused.
    func submit(_ job: NewJob, answer give: @escaping @Sendable (Result) -> Void) {
        let answer = Answer(give)
        condition.lock()
        let refusal: String? =
            if isStopping {
                "shutting down"
            } else if pending.count >= settings.maxPending || pendingBytes >= settings.maxPendingBytes {
                "\(pending.count) requests (\(pendingBytes >> 20) MiB) already waiting for the database"
            } else {
                nil
            }
        if refusal == nil {
            pending.append(Submission(job: job, answer: answer, submittedAt: Self.now()))
            pendingBytes += job.payload.utf8.count
            condition.signal()
        }
        condition.unlock()
        if let refusal { answer.give(.unavailable(reason: refusal)) }
    }

    private func writerLoop(_ index: Int) {
        var connection: PostgresConnection?
        while let batch = nextBatch(writer: index) {
            let results = commit(batch.map(\.job), connection: &connection)
            condition.lock()
            inFlight[index] = nil
            condition.unlock()
            for (submission, result) in zip(batch, results) { submission.answer.give(result) }
        }
        connection?.close()
    }

    /// Waits for work; nil once stopping and nothing is left.
    private func nextBatch(writer: Int) -> [Submission]? {
        condition.lock()
        defer { condition.unlock() }
        while pending.isEmpty {
            if isStopping { return nil }
            condition.wait()
        }
        var batch: [Submission] = []
        var bytes = 0
        while let next = pending.first, batch.count < settings.maxBatchJobs,
            batch.isEmpty || bytes + next.job.payload.utf8.count <= settings.maxBatchBytes
        {
            bytes += next.job.payload.utf8.count
            batch.append(pending.removeFirst())
        }
        pendingBytes -= bytes
        inFlight[writer] = (Self.now(), batch.map(\.answer))
        // Others waiting means more work than this writer took: let the next writer gather it meanwhile.
        if !pending.isEmpty { condition.signal() }
        return batch
    }

    /// One statement, so one transaction and one commit; retried once when the failure was transient (a
    /// server restart between batches, a deadlock with another service's enqueue), which is safe because
    /// the unique keys absorb anything the first try committed.
    private func commit(_ jobs: [NewJob], connection: inout PostgresConnection?) -> [Result] {
        var lastError: PostgresError?
        for _ in 0..<2 {
            do {
                if connection == nil { connection = try Self.connect(settings.connectionString, logger: logger) }
                guard let open = connection else { break }
                let outcomes = try queue.enqueueUnique(jobs, on: open)
                failureLog.recovered(logger: logger)
                return outcomes.map { outcome in
                    switch outcome {
                    case .enqueued(let id): .enqueued(jobID: id)
                    case .duplicate(let id): .duplicate(jobID: id)
                    }
                }
            } catch {
                lastError = error
                if error.code == .connectionFailed { connection = nil }
                if !error.isTransient { break }
            }
        }
        let reason = lastError.map { "\($0)" } ?? "no connection"
        failureLog.failed(reason, jobs: jobs.count, logger: logger)
        return Array(repeating: .unavailable(reason: reason), count: jobs.count)
    }

    private static func connect(_ connectionString: String?, logger: Logger) throws(PostgresError) -> PostgresConnection
    {
        // A writer stuck on a lock must not hold its batch past the answer timeout for long; as a session
        // setting it survives the connection's own reconnects.
        try PostgresConnection(
            connectionString: connectionString, logger: logger,
            sessionSettings: JobQueue.sessionSettings + [("statement_timeout", "20s")])
    }

    /// Answers requests that waited too long, queued or in a commit that hangs; a late commit result is
    /// then ignored (each answer is given once).
    private func answerOverdue() {
        let deadline = Self.now() - settings.answerTimeout
        var overdue: [Answer] = []
        condition.lock()
        while let first = pending.first, first.submittedAt < deadline {
            pendingBytes -= first.job.payload.utf8.count
            overdue.append(pending.removeFirst().answer)
        }
        for (_, batch) in inFlight where batch.startedAt < deadline { overdue.append(contentsOf: batch.answers) }
        condition.unlock()
        let reason = "not committed within \(settings.answerTimeout) s"
        for answer in overdue { answer.give(.unavailable(reason: reason)) }
    }

    private static func now() -> Double { ProcessInfo.processInfo.systemUptime }
}

/// Gives one request its answer exactly once, whoever answers first: its writer or the sweeper.
private final class Answer: Sendable {
    private let receiver: Mutex<(@Sendable (GroupCommitter.Result) -> Void)?>

    init(_ receiver: @escaping @Sendable (GroupCommitter.Result) -> Void) {
        self.receiver = Mutex(receiver)
    }

    func give(_ result: GroupCommitter.Result) {
        receiver.withLock { $0.take() }?(result)
    }
}

/// Logs a database failure once, then at most every 10 s while it lasts, and the recovery: an outage
/// under load must not write a line per request.
private final class FailureLog: Sendable {
    private let state = Mutex<(failing: Bool, lastLogged: Double, suppressed: Int)>((false, 0, 0))

    func failed(_ reason: String, jobs: Int, logger: Logger) {
        let now = ProcessInfo.processInfo.systemUptime
        let suppressed = state.withLock { state -> Int? in
            defer { state.failing = true }
            guard !state.failing || now - state.lastLogged >= 10 else {
                state.suppressed += jobs
                return nil
            }
            defer {
                state.lastLogged = now
                state.suppressed = 0
            }
            return state.suppressed
        }
        guard let suppressed else { return }
        logger.error(
            "Webhooks not committed; answering 503 so senders retry",
            metadata: ["error": "\(reason)", "requests.count": "\(jobs + suppressed)"])
    }

    func recovered(logger: Logger) {
        let wasFailing = state.withLock { state in
            defer { state.failing = false }
            return state.failing
        }
        if wasFailing { logger.notice("Webhooks are committed again") }
    }
}
