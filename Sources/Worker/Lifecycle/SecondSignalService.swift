import Foundation
import Logging
import ServiceLifecycle
import UnixSignals

/// Exits at once, with status 1, on a second SIGTERM or SIGINT: the first one starts the group's graceful
/// stop, which may wait for running jobs; an operator who sends another wants out now. Running jobs keep
/// their leases until they expire and another worker rescues them.
///
/// The group's graceful signals and its cancellation signals must not overlap, so the second signal is
/// counted here, on a signal sequence of its own. It is the group's first service, so it listens until
/// every other part has stopped.
struct SecondSignalService: Service {
    let logger: Logger

    func run() async {
        let signals = await UnixSignalsSequence(trapping: .sigterm, .sigint)
        await cancelWhenGracefulShutdown {
            var seen = 0
            for await signal in signals {
                seen += 1
                guard seen >= 2 else { continue }
                logger.critical(
                    "Second stop signal; exiting at once, running jobs will be rescued",
                    metadata: ["signal": "\(signal)"])
                exit(1)
            }
        }
    }
}
