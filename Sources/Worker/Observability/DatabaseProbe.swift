import Dispatch
import Jobs
import Logging
import PGQueue

/// Answers "is the database reachable and is its schema current?" for `/readyz`, from a connection of
/// its own on a serial queue (libpq blocks; the HTTP server's threads must not).
final class DatabaseProbe: @unchecked Sendable {
    // Safety: `connection` is read and written only on `queue`.
    struct Readiness: Sendable {
        var isReady: Bool
        var message: String
    }

    private let queue = DispatchQueue(label: "sluice.readiness")
    private let connectionString: String?
    private let logger: Logger
    private var connection: PostgresConnection?

    init(connectionString: String?, logger: Logger) {
        self.connectionString = connectionString
        self.logger = logger
    }

    func check() async -> Readiness {
        await withCheckedContinuation { continuation in
            queue.async { continuation.resume(returning: self.checkNow()) }
        }
    }

    private func checkNow() -> Readiness {
        do {
            let open = try connection ?? PostgresConnection(connectionString: connectionString, logger: logger)
            connection = open
            guard let installed = try InstalledSchema.read(on: open) else {
                return Readiness(isReady: false, message: "schema not applied: run 'sluice migrate'")
            }
            let compatibility = installed.compatibility(withBuild: SluiceSchema.version)
            guard compatibility.isUsable else {
                return Readiness(isReady: false, message: "not ready: \(compatibility)")
            }
            return Readiness(
                isReady: true,
                message: compatibility == .current
                    ? "ready: schema version \(installed.version)" : "ready: \(compatibility)")
        } catch {
            connection = nil
            return Readiness(isReady: false, message: "database unavailable: \(error)")
        }
    }
}
