import Hummingbird
import HummingbirdCore
import Logging

/// The server on `SLUICE_LISTEN`: the webhook routes and the app's API, with the limits a server facing the
/// internet needs.
enum PublicServer {
    /// The HTTP application; `routes` adds the routes, `onListening` receives the bound port (port 0 picks one).
    static func application(
        host: String, port: Int, logger: Logger, routes: (Router<BasicRequestContext>) throws -> Void,
        onListening: @escaping @Sendable (Int) -> Void
    ) rethrows -> some ApplicationProtocol {
        let router = Router()
        try routes(router)
        let http = HTTP1Channel.Configuration(
            // Closes connections that send nothing for this long, including ones stalled mid-request.
            idleTimeout: .seconds(30),
            httpDecoderConfiguration: .init(
                maxHeaderFieldSize: 16 << 10, maxHeaderListSize: 64 << 10, maxHeaderFieldCount: 100)
        )
        return Application(
            router: router,
            server: .http1(configuration: http),
            configuration: .init(address: .hostname(host, port: port), serverName: "sluice"),
            onServerRunning: { channel in onListening(channel.localAddress?.port ?? port) },
            logger: logger
        )
    }
}
