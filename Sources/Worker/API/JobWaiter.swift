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

    /// The waiting requests, by a token each and by job, so a notification for one job costs a lookup however
    /// many requests wait; a wake that comes before the sleep is kept for it.
    private final class Wakeups: Sendable {
        private struct Waiter {
            var jobID: Int64
            var woken = false
            var continuation: CheckedContinuation<Void, Never>?
        }

        private struct State {
            var waiters: [UInt64: Waiter] = [:]
            var byJob: [Int64: Set<UInt64>] = [:]

            mutating func remove(_ token: UInt64) -> Waiter? {
                guard let waiter = waiters.removeValue(forKey: token) else { return nil }
                byJob[waiter.jobID]?.remove(token)
                if byJob[waiter.jobID]?.isEmpty == true { byJob.removeValue(forKey: waiter.jobID) }
                return waiter
            }

            /// Resumes a sleeping waiter now, or marks it so its sleep returns at once.
            mutating func wake(_ token: UInt64) -> CheckedContinuation<Void, Never>? {
                guard let waiter = waiters[token] else { return nil }
                guard let continuation = waiter.continuation else {
                    waiters[token]?.woken = true
                    return nil
                }
                _ = remove(token)
                return continuation
            }
        }

        private let state = Mutex(State())
        private let nextToken = Atomic<UInt64>(0)

        func register(jobID: Int64) -> UInt64 {
            let token = nextToken.add(1, ordering: .relaxed).newValue
            state.withLock { state in
                state.waiters[token] = Waiter(jobID: jobID)
                state.byJob[jobID, default: []].insert(token)
            }
            return token
        }

        func cancel(_ token: UInt64) {
            state.withLock { $0.remove(token) }?.continuation?.resume()
        }

        func sleep(_ token: UInt64) async {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let resumeNow = state.withLock { state -> Bool in
                    guard let waiter = state.waiters[token], !waiter.woken else {
                        _ = state.remove(token)
                        return true
                    }
                    state.waiters[token]?.continuation = continuation
                    return false
                }
                if resumeNow { continuation.resume() }
            }
            state.withLock { _ = $0.remove(token) }
        }

        func wake(token: UInt64) {
            state.withLock { $0.wake(token) }?.resume()
        }

        func wake(jobID: Int64) {
            let continuations = state.withLock { state in
                (state.byJob[jobID] ?? []).compactMap { state.wake($0) }
            }
            for continuation in continuations { continuation.resume() }
        }

        func wakeAll() {
            let continuations = state.withLock { state in
                Array(state.waiters.keys).compactMap { state.wake($0) }
            }
            for continuation in continuations { continuation.resume() }
        }
    }
}
