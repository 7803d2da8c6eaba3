import Logging
import PGQueue
import Synchronization

/// Lets an API request wait for a job it started, woken by `NOTIFY sluice_job_results` (sent when a job
/// stores its result, and when a job an API caller started moves to the dead letters) rather than polling.
///
/// One listening connection serves every waiting request. A request registers before it first looks at
/// the job, so a notification between that look and the wait is not lost; when the listener reconnects
/// (notifications may have been missed) every waiter looks again.
final class JobWaiter: Sendable {
    private let wakeups: Wakeups
    private let listener: PostgresListener

    init(connectionString: String?, logger: Logger) {
        let wakeups = Wakeups()
        self.wakeups = wakeups
        listener = PostgresListener(
            connectionString: connectionString, channels: ["sluice_job_results"], logger: logger
        ) { event in
            switch event {
            case .connected: wakeups.wakeAll()
            case .notification(let notification):
                if let id = Int64(notification.payload) { wakeups.wake(jobID: id) }
            }
        }
    }

    func start() { listener.start() }

    func stop() { listener.stop() }

    /// Looks at the job with `look` until it says the job is done, or `seconds` have passed.
    /// - Returns: the last thing `look` returned, done or not.
    func wait<Answer: Sendable>(
        for jobID: Int64, seconds: Double, look: () async throws -> (answer: Answer, done: Bool)
    ) async throws -> Answer {
        let deadline = ContinuousClock.now + .milliseconds(Int64(max(0, seconds) * 1000))
        while true {
            let token = wakeups.register(jobID: jobID)
            let seen: (answer: Answer, done: Bool)
            do {
                seen = try await look()
            } catch {
                wakeups.cancel(token)
                throw error
            }
            if seen.done || ContinuousClock.now >= deadline {
                wakeups.cancel(token)
                return seen.answer
            }
            let timer = Task {
                try? await Task.sleep(until: deadline, clock: .continuous)
                wakeups.wake(token: token)
            }
            await wakeups.sleep(token)
            timer.cancel()
        }
    }

    /// The waiting requests, by a token each; a wake that comes before the sleep is kept for it.
    private final class Wakeups: Sendable {
        private struct Waiter {
            var jobID: Int64
            var woken = false
            var continuation: CheckedContinuation<Void, Never>?
        }

        private let waiters = Mutex<[UInt64: Waiter]>([:])
        private let nextToken = Atomic<UInt64>(0)

        func register(jobID: Int64) -> UInt64 {
            let token = nextToken.add(1, ordering: .relaxed).newValue
            waiters.withLock { $0[token] = Waiter(jobID: jobID) }
            return token
        }

        func cancel(_ token: UInt64) {
            let continuation = waiters.withLock { $0.removeValue(forKey: token)?.continuation }
            continuation?.resume()
        }

        func sleep(_ token: UInt64) async {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let resumeNow = waiters.withLock { waiters -> Bool in
                    guard let waiter = waiters[token], !waiter.woken else {
                        waiters.removeValue(forKey: token)
                        return true
                    }
                    waiters[token]?.continuation = continuation
                    return false
                }
                if resumeNow { continuation.resume() }
            }
            waiters.withLock { _ = $0.removeValue(forKey: token) }
        }

        func wake(token: UInt64) {
            wake { candidate, _ in candidate == token }
        }

        func wake(jobID: Int64) {
            wake { _, waiter in waiter.jobID == jobID }
        }

        func wakeAll() {
            wake { _, _ in true }
        }

        private func wake(where matches: (UInt64, Waiter) -> Bool) {
            let continuations = waiters.withLock { waiters in
                var found: [CheckedContinuation<Void, Never>] = []
                for (token, waiter) in waiters where matches(token, waiter) {
                    if let continuation = waiter.continuation {
                        found.append(continuation)
                        waiters.removeValue(forKey: token)
                    } else {
                        waiters[token]?.woken = true
                    }
                }
                return found
            }
            for continuation in continuations { continuation.resume() }
        }
    }
}
