import Synchronization

/// The pool's state behind one lock, shared by the fetcher, the slots, maintenance and the stop.
final class PoolStateStore: Sendable {
    private let mutex: Mutex<PoolState>

    init(_ state: PoolState) {
        mutex = Mutex(state)
    }

    func withLock<Result: Sendable>(_ body: (inout PoolState) -> Result) -> Result {
        mutex.withLock { state in body(&state) }
    }
}
