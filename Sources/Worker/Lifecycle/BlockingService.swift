import Foundation
import ServiceLifecycle

/// A part of the process that runs on threads of its own (the worker pool, the group committer): it
/// starts at once and stops by blocking until its threads are done.
///
/// The stop runs on a thread of its own, so it never holds one of Swift concurrency's few threads, when
/// the group's graceful shutdown reaches this service, or at once when the group is cancelled.
struct BlockingService: Service, CustomStringConvertible {
    let description: String
    let start: @Sendable () -> Void
    let stop: @Sendable () -> Void

    func run() async {
        start()
        try? await gracefulShutdown()
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let thread = Thread {
                stop()
                continuation.resume()
            }
            thread.name = "sluice.stop.\(description)"
            thread.start()
        }
    }
}
