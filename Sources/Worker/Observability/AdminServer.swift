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
