import Foundation

/// Wakes a thread that waits for work: `signal()` from a notification, `wait(timeout:)` in the claim loop.
///
/// Signals coalesce: many signals before a wait wake it once. A signal sent while nobody waits is kept
/// for the next wait, so a notification that arrives between an empty claim and the wait is not lost.
public final class WakeSignal: @unchecked Sendable {
    // Safety: `pending` is read and written only while holding `condition`.
    private let condition = NSCondition()
    private var pending = false

    public init() {}

    /// Wakes the waiter, or the next one to wait.
    public func signal() {
        condition.lock()
        pending = true
        condition.signal()
        condition.unlock()
    }

    /// Blocks until signalled or until `timeout` seconds pass.
    /// - Returns: true when signalled, false on timeout.
    @discardableResult
    public func wait(timeout: Double) -> Bool {
        let deadline = Date(timeIntervalSinceNow: timeout)
        condition.lock()
        defer { condition.unlock() }
        while !pending {
            if !condition.wait(until: deadline) { break }
        }
        let signalled = pending
        pending = false
        return signalled
    }
}
