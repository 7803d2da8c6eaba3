import Synchronization

/// How many lines of one kind a process may write per window, so a flood of requests cannot flood the
/// journal.
///
/// journald drops a service's messages beyond 10,000 in 30 s (its default `RateLimitBurst`), all of them
/// alike: one line per webhook let a sender of forged deliveries, or a burst of genuine ones, push a
/// worker's errors out of the journal. Lines over the budget are not written; the next line of the kind
/// that is written says how many were left out. Metrics count every request either way.
final class LogBudget: Sendable {
    private struct Window {
        var start: ContinuousClock.Instant
        var written = 0
        var skipped = 0
    }

    private let linesPerWindow: Int
    private let window: Duration
    private let windows = Mutex<[String: Window]>([:])

    /// - Parameters:
    ///   - linesPerWindow: lines of each kind written per window; more in the same window are skipped.
    ///   - window: the length of a window, counted from the first line of the kind after the last window.
    init(linesPerWindow: Int, window: Duration = .seconds(10)) {
        self.linesPerWindow = linesPerWindow
        self.window = window
    }

    /// Whether to write a line of `kind` now: nil to skip it, otherwise the number of lines of `kind` skipped
    /// since the last one written, for the line to report. Kinds must come from a small fixed set (a source
    /// and an outcome), never from request data, since each has its own window.
    func admit(_ kind: String, now: ContinuousClock.Instant = .now) -> Int? {
        windows.withLock { windows in
            var current = windows[kind] ?? Window(start: now)
            if now - current.start >= window {
                current.start = now
                current.written = 0
            }
            defer { windows[kind] = current }
            guard current.written < linesPerWindow else {
                current.skipped += 1
                return nil
            }
            let skipped = current.skipped
            current.written += 1
            current.skipped = 0
            return skipped
        }
    }
}
