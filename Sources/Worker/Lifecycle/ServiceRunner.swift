import ArgumentParser
import Foundation
import Hummingbird
import Jobs
import Logging
import OpenAPIHummingbird
import PGQueue
import ServiceLifecycle

/// Runs a long-lived `sluice` process as one `ServiceGroup`: the admin server, the watchdog, the worker
/// pool (serve, work), the group committer and the webhook receiver (serve, receive), and the systemd
/// notifier, with a graceful stop on the first SIGTERM or SIGINT and an exit on the second.
///
/// The group starts them in that order and stops them in reverse: STOPPING=1 goes out, the receiver stops
/// taking requests and answers those in flight, the group committer commits what is pending, the pool
/// lets running jobs finish, and the admin server goes last so health and metrics stay visible throughout.
/// A part that fails (a port taken) stops the others and the process exits with status 1.
struct ServiceRunner {
    let configuration: SluiceConfiguration
    let runtime: ProcessRuntime
    let registry: JobRegistry
    let parts: Parts

    /// What a process runs: `serve` all three, `work` the pool, `receive` the receiver, `api` the API.
    struct Parts: OptionSet, Sendable {
        let rawValue: Int
        static let pool = Parts(rawValue: 1)
        static let receiver = Parts(rawValue: 2)
        /// The app's API under `/v1` on `SLUICE_LISTEN`.
        static let api = Parts(rawValue: 4)
    }

    private var runsPool: Bool { parts.contains(.pool) }
    private var runsReceiver: Bool { parts.contains(.receiver) }
    private var runsAPI: Bool { parts.contains(.api) }

    func run() async throws {
        let logger = runtime.logger
        let notifier = SystemdNotifier()
        let receives = (runsReceiver || runsAPI) && configuration.listen != .off
        let listening = ListeningGate(servers: (configuration.adminListen != .off ? 1 : 0) + (receives ? 1 : 0))
        var services: [any Service] = [SecondSignalService(logger: logger)]
        if let admin = adminServer(logger: logger, listening: listening) { services.append(admin) }
        let pool: WorkerPool? =
            runsPool
            ? WorkerPool(settings: configuration.pool, registry: registry, metrics: runtime.metrics, logger: logger)
            : nil
        if let interval = SystemdNotifier.watchdogInterval() {
            services.append(
                WatchdogService(notifier: notifier, interval: interval) { pool?.isHealthy(within: $0) ?? true })
        }
        if runsPool, let notify = configuration.notify { keepNotifyEndpoint(notify, logger: logger) }
        if let pool {
            let grace = configuration.shutdownSeconds
            services.append(
                BlockingService(description: "pool", start: { pool.start() }, stop: { pool.stop(gracePeriod: grace) }))
        }
        var sessions: ClerkSessionVerifier?
        if let settings = configuration.clerkSession {
            sessions = try await ClerkSessionVerifier(settings: settings, logger: logger)
            if settings.authorizedParties.isEmpty, runsAPI {
                logger.warning(
                    "Clerk session tokens made for any origin of the instance are accepted",
                    metadata: ["fix": "set CLERK_AUTHORIZED_PARTIES to the app's origins"])
            }
        }
        if let front = try publicServer(logger: logger, listening: listening, sessions: sessions) {
            if let committer = front.committer {
                services.append(
                    BlockingService(description: "committer", start: { committer.start() }, stop: { committer.stop() }))
            }
            services.append(front.server)
        }
        services.append(
            SystemdNotifierService(
                notifier: notifier, listening: listening,
                status: [runsReceiver ? "receiving" : nil, runsPool ? "working" : nil].compactMap { $0 }.joined(
                    separator: ", "),
                gracePeriod: configuration.shutdownSeconds, logger: logger))

        let group = ServiceGroup(
            configuration: .init(
                services: services.map { .init(service: $0) }, gracefulShutdownSignals: [.sigterm, .sigint],
                cancellationSignals: [], logger: logger))
        do {
            try await group.run()
        } catch {
            logger.critical("A part of the service failed; stopped the rest", metadata: ["error": "\(error)"])
            throw ExitCode.failure
        }
        logger.info("Stopped")
    }

    /// The server on `SLUICE_LISTEN`: the webhook receiver and its committer, when this process receives,
    /// and the app's API, when it serves it; logs which routes are on.
    private func publicServer(
        logger: Logger, listening: ListeningGate, sessions: ClerkSessionVerifier?
    ) throws -> (server: any Service, committer: GroupCommitter?)? {
        guard runsReceiver || runsAPI, case .address(let host, let port) = configuration.listen else {
            if runsReceiver || runsAPI { logger.info("Webhook receiver and API off (SLUICE_LISTEN=off)") }
            return nil
        }
        var receiver: WebhookReceiver?
        if runsReceiver {
            for entry in WebhookSourceEntry.all where configuration.webhooks[entry.source] == nil {
                logger.notice(
                    "Webhook route off: no secret configured; it answers 404",
                    metadata: ["route": "\(entry.source.path)", "variable": "\(entry.secretVariable)"])
            }
            receiver = WebhookReceiver(
                sources: WebhookSourceEntry.all.map(\.source), verifiers: configuration.webhooks,
                committer: GroupCommitter(settings: .init(connectionString: configuration.databaseURL), logger: logger),
                metrics: runtime.metrics, logger: logger)
        }
        let limiter = CallerRateLimiter(perSecond: configuration.apiRateLimit)
        let api =
            runsAPI
            ? AppAPI(
                database: APIDatabase(connectionString: configuration.databaseURL, connections: 4, logger: logger),
                limiter: limiter, actionLimiter: CallerRateLimiter(perSecond: configuration.apiActionRateLimit),
                sessions: sessions,
                keys: ServiceKeyCache(connectionString: configuration.databaseURL, logger: logger),
                jobs: JobWaiter(connectionString: configuration.databaseURL, logger: logger),
                waitSeconds: configuration.apiWaitSeconds,
                redirects: RedirectPolicy(hosts: configuration.allowedRedirectHosts), logger: logger) : nil
        let server = try PublicServer.application(host: host, port: port, logger: logger, webhooks: receiver) {
            router in
            receiver?.addRoutes(to: router)
            if api != nil {
                router.add(middleware: APICORSMiddleware(origins: configuration.corsOrigins))
                router.add(middleware: APIMethodMiddleware())
            }
            try api?.registerHandlers(
                on: router,
                middlewares: [
                    APIMiddleware(limiter: limiter, metrics: runtime.metrics, logger: logger)
                ])
        } onListening: { port in
            logger.info(
                runsReceiver ? "Webhook receiver listening" : "API listening",
                metadata: ["address": "\(host):\(port)", "api": "\(runsAPI)"])
            listening.pass()
        }
        if let api {
            api.keys.start()
            api.jobs.start()
        }
        return (server, receiver?.committer)
    }

    /// Writes the endpoint of `SLUICE_NOTIFY_URL` so the workers deliver to it; a failure is logged, not fatal
    /// (the endpoint keeps its last state).
    private func keepNotifyEndpoint(_ notify: (url: String, secret: String), logger: Logger) {
        do {
            let connection = try PostgresConnection(connectionString: configuration.databaseURL)
            let id = try OutboundStore(connection).upsertFromEnvironment(url: notify.url, secret: notify.secret)
            logger.info(
                "Business events go to SLUICE_NOTIFY_URL", metadata: ["endpoint": "\(id)", "url": "\(notify.url)"])
        } catch {
            logger.error(
                "Could not write the endpoint of SLUICE_NOTIFY_URL", metadata: ["error": "\(error)"])
        }
    }

    private func adminServer(logger: Logger, listening: ListeningGate) -> (any Service)? {
        guard case .address(let host, let port) = configuration.adminListen else {
            logger.info("Admin server off (SLUICE_ADMIN_LISTEN=off)")
            return nil
        }
        let probe = DatabaseProbe(connectionString: configuration.databaseURL, logger: logger)
        return AdminServer.application(host: host, port: port, registry: runtime.registry, probe: probe, logger: logger)
        { port in
            logger.info("Admin server listening", metadata: ["address": "\(host):\(port)"])
            listening.pass()
        }
    }
}
