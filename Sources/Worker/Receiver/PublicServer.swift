import Hummingbird
import HummingbirdCore
import Logging
import NIOHTTP1

/// The server on `SLUICE_LISTEN`: the webhook routes and the app's API, with the limits a server facing the
/// internet needs.
enum PublicServer {
    /// The HTTP application; `routes` adds the routes, `webhooks` answers its routes in the connection's
    /// pipeline, `onListening` receives the bound port (port 0 picks one).
    static func application(
        host: String, port: Int, logger: Logger, webhooks: WebhookReceiver?,
        routes: (Router<BasicRequestContext>) throws -> Void, onListening: @escaping @Sendable (Int) -> Void
    ) rethrows -> some ApplicationProtocol {
        let router = Router()
        try routes(router)
        var limits = NIOHTTPDecoderLimitConfiguration()
        limits.maxHeaderFieldSize = 16 << 10
        limits.maxHeaderListSize = 64 << 10
        limits.maxHeaderFieldCount = 100
        let decoderLimits = limits
        let server = HTTPServerBuilder { responder in
            PublicHTTPChannel(
                responder: responder, idleTimeout: .seconds(30), decoderLimits: decoderLimits, webhooks: webhooks)
        }
        return Application(
            router: router,
            server: server,
            configuration: .init(address: .hostname(host, port: port), serverName: "sluice"),
            onServerRunning: { channel in onListening(channel.localAddress?.port ?? port) },
            logger: logger
        )
    }
}
