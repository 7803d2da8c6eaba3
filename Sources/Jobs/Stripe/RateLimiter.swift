import Foundation
import Synchronization

/// Spaces requests out to at most `perSecond`, process-wide, by blocking the caller's thread.
final class RateLimiter: Sendable {
    private let interval: Double
    private let next = Mutex<Double>(0)

    init(perSecond: Double) {
        interval = perSecond > 0 ? 1 / perSecond : 0
    }

    func acquire() {
        let now = ProcessInfo.processInfo.systemUptime
        let slot = next.withLock { next in
            let slot = max(next, now)
            next = slot + interval
            return slot
        }
        if slot > now { Thread.sleep(forTimeInterval: slot - now) }
    }
}
