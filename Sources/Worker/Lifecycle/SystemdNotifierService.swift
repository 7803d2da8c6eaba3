import Foundation
import Logging
import ServiceLifecycle

/// Tells systemd READY=1 once every server listens, and STOPPING=1 when the graceful stop begins.
///
/// It is the group's last service, so its graceful shutdown comes first: STOPPING=1 goes out before any
/// other part starts to stop.
struct SystemdNotifierService: Service {
    let notifier: SystemdNotifier
    let listening: ListeningGate
    let status: String
    let gracePeriod: Double
    let logger: Logger

    func run() async {
        guard await listening.allListening() else { return }
        notifier.ready(status: status)
        logger.info("Ready", metadata: ["pid": "\(getpid())"])
        guard (try? await gracefulShutdown()) != nil else { return }
        logger.info("Stopping gracefully; a second signal stops at once", metadata: ["grace_s": "\(gracePeriod)"])
        notifier.stopping()
    }
}
