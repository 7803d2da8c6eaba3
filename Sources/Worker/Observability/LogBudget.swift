import Dispatch
import Logging
import Synchronization

/// How many lines of one kind a process writes per window, for lines a sender causes (one per request),
/// so that a flood of requests cannot flood the journal.
///
/// journald drops a service's lines beyond 10,000 of one priority in 30 s (its default `RateLimitBurst`,
/// raised with free disk space): a line per request let a flood of forged webhooks or junk API calls
/// crowd out the other lines of its priority, such as the `User erased` lines a restore reads back.
/// Lines over the budget are skipped; once their window has ended, `report` is called with how many,
/// within a second. Metrics count every request either way.
final class LogBudget<Kind: Hashable & Sendable>: Sendable {
    private struct Window {
        var start: ContinuousClock.Instant
        var written = 0
        /// Skipped in this window.
        var skipped = 0
        /// Skipped in windows that have ended, not reported yet.
        var unreported = 0

        mutating func roll(to now: ContinuousClock.Instant, after length: Duration) {
            guard now - start >= length else { return }
            start = now
            written = 0
            unreported += skipped
            skipped = 0
        }
    }

    private let linesPerWindow: Int
    private let window: Duration
    private let windows = Mutex<[Kind: Window]>([:])
    // Safety: set once in init and only cancelled in deinit; a dispatch source is safe to use from any thread.
    nonisolated(unsafe) private let reporter: (any DispatchSourceTimer)?

    /// - Parameters:
    ///   - linesPerWindow: lines of each kind written per window; more in the same window are skipped.
    ///   - window: a window's length, counted from the first line of its kind after the last window.
    ///   - report: told of each kind with lines skipped in a window that has ended, and how many.
    init(
        linesPerWindow: Int, window: Duration = .seconds(10), report: (@Sendable (Kind, Int) -> Void)? = nil
    ) {
        self.linesPerWindow = linesPerWindow
        self.window = window
        guard let report else {
            reporter = nil
            return
        }
        let timer = DispatchSource.makeTimerSource(queue: DispatchQueue.global(qos: .utility))
        reporter = timer
        timer.schedule(deadline: .now() + 1, repeating: 1)
        timer.setEventHandler { [weak self] in
            for (kind, count) in self?.skippedLines() ?? [] { report(kind, count) }
        }
        timer.resume()
    }

    deinit {
        reporter?.cancel()
    }

    /// Whether `logger` should write a line of `kind` now: at `debug` every line, for an operator who asked
    /// for them all; otherwise within the budget.
    func admit(_ kind: Kind, on logger: Logger) -> Bool {
        logger.logLevel <= .debug || admit(kind)
    }

    /// Whether to write a line of `kind` now. Kinds come from a small fixed set (a source and an outcome,
    /// a status code), never from request data: each has its own window.
    func admit(_ kind: Kind, now: ContinuousClock.Instant = .now) -> Bool {
        windows.withLock { windows in
            var current = windows[kind] ?? Window(start: now)
            current.roll(to: now, after: window)
            defer { windows[kind] = current }
            guard current.written < linesPerWindow else {
                current.skipped += 1
                return false
            }
            current.written += 1
            return true
        }
    }

    /// The kinds with lines skipped in windows that have ended by `now`, with how many; each count is
    /// returned once.
    func skippedLines(now: ContinuousClock.Instant = .now) -> [(kind: Kind, count: Int)] {
        windows.withLock { windows in
            var ended: [(kind: Kind, count: Int)] = []
            for kind in Array(windows.keys) {
                guard var current = windows[kind] else { continue }
                current.roll(to: now, after: window)
                if current.unreported > 0 { ended.append((kind, current.unreported)) }
                current.unreported = 0
                windows[kind] = current
            }
            return ended
        }
    }
}
