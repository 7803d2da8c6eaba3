import Dispatch
import Foundation
import Synchronization

/// Turns SIGTERM and SIGINT into a graceful stop, and a second one into an immediate exit.
///
/// The signals are delivered through `DispatchSource`s; on Linux their registration completes
/// asynchronously, so `init` waits for it (a signal arriving before would kill the process).
final class SignalWatcher: @unchecked Sendable {
    // Safety: `sources` is set in init and never changed, only kept alive; the rest is atomic or locked.
    private let sources: [any DispatchSourceSignal]
    private let count = Atomic<Int>(0)
    /// The first signal's number once it came, and the task waiting for it, under one lock.
    private let first = Mutex<(received: Int32?, waiter: CheckedContinuation<Int32, Never>?)>((nil, nil))

    /// - Parameter onSecond: runs on the second signal, before the process exits with status 1.
    init(signals: [Int32] = [SIGTERM, SIGINT], onSecond: @escaping @Sendable (Int32) -> Void) {
        let queue = DispatchQueue(label: "sluice.signals")
        let registered = DispatchGroup()
        var sources: [any DispatchSourceSignal] = []
        for number in signals {
            // Dispatch takes over the signal only once the default action is off; SIG_IGN is set before
            // the source exists, never after.
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: queue)
            sources.append(source)
            registered.enter()
            source.setRegistrationHandler { registered.leave() }
        }
        self.sources = sources
        for (source, number) in zip(sources, signals) {
            source.setEventHandler { [self] in
                let seen = count.add(1, ordering: .relaxed).newValue
                if seen == 1 {
                    let waiter = first.withLock { first in
                        first.received = number
                        defer { first.waiter = nil }
                        return first.waiter
                    }
                    waiter?.resume(returning: number)
                } else {
                    onSecond(number)
                    exit(1)
                }
            }
            source.resume()
        }
        registered.wait()
    }

    /// Waits for the first signal and returns its number.
    func firstSignalReceived() async -> Int32 {
        await withCheckedContinuation { continuation in
            let already = first.withLock { first -> Int32? in
                if first.received == nil { first.waiter = continuation }
                return first.received
            }
            if let already { continuation.resume(returning: already) }
        }
    }
}
