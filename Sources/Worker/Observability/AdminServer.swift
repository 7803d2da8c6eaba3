import Foundation
import Hummingbird
import Jobs
import Logging
import NIOCore
import PGQueue
import Prometheus

/// `/healthz`, `/readyz` and `/metrics` on the admin address, never on the public webhook port.
enum AdminServer {
    /// Builds the admin application; `onListening` receives the bound port (useful with port 0).
    static func application(
        host: String,
        port: Int,
        registry: PrometheusCollectorRegistry,
        probe: DatabaseProbe,
        logger: Logger,
        onListening: @escaping @Sendable (Int) -> Void
    ) -> some ApplicationProtocol {
        let router = Router()
        router.get("/healthz") { _, _ in
            "ok\n"
        }
        router.get("/readyz") { _, _ -> Response in
            let readiness = await probe.check()
            let status: HTTPResponse.Status = readiness.isReady ? .ok : .serviceUnavailable
            return Response(
                status: status, headers: [.contentType: "text/plain; charset=utf-8"],
                body: .init(byteBuffer: ByteBuffer(string: readiness.message + "\n")))
        }
        router.get("/metrics") { _, _ -> Response in
            let text = registry.emitToBuffer()
            return Response(
                status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                body: .init(byteBuffer: ByteBuffer(bytes: text)))
        }
        return Application(
            router: router,
            configuration: .init(address: .hostname(host, port: port), serverName: "sluice-admin"),
            onServerRunning: { channel in
                onListening(channel.localAddress?.port ?? port)
            },
            logger: logger
        )
    }
}

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
