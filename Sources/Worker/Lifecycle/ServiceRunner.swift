import ArgumentParser
import Foundation
import Hummingbird
import Jobs
import Logging
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
    let configuration: Configuration
    let runtime: ProcessRuntime
    let registry: JobRegistry
    let runsPool: Bool
    let runsReceiver: Bool

    func run() async throws {
        let logger = runtime.logger
        let notifier = SystemdNotifier()
        let receives = runsReceiver && configuration.listen != .off
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
        if let pool {
            let grace = configuration.shutdownSeconds
            services.append(
                BlockingService(description: "pool", start: { pool.start() }, stop: { pool.stop(gracePeriod: grace) }))
        }
        if let receiving = receiverServer(logger: logger, listening: listening) {
            let committer = receiving.committer
            services.append(
                BlockingService(description: "committer", start: { committer.start() }, stop: { committer.stop() }))
            services.append(receiving.server)
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

    /// The webhook receiver and its committer, when this process receives; logs which routes are on.
    private func receiverServer(
        logger: Logger, listening: ListeningGate
    ) -> (server: any Service, committer: GroupCommitter)? {
        guard runsReceiver, case .address(let host, let port) = configuration.listen else {
            if runsReceiver { logger.info("Webhook receiver off (SLUICE_LISTEN=off)") }
            return nil
        }
        for entry in WebhookSourceEntry.all where configuration.webhooks[entry.source] == nil {
            logger.notice(
                "Webhook route off: no secret configured; it answers 404",
                metadata: ["route": "\(entry.source.path)", "variable": "\(entry.secretVariable)"])
        }
        let committer = GroupCommitter(
            settings: .init(connectionString: configuration.databaseURL), logger: logger)
        let receiver = WebhookReceiver(
            sources: WebhookSourceEntry.all.map(\.source), verifiers: configuration.webhooks, committer: committer,
            metrics: runtime.metrics, logger: logger)
        let server = receiver.application(host: host, port: port) { port in
            logger.info("Webhook receiver listening", metadata: ["address": "\(host):\(port)"])
            listening.pass()
        }
        return (server, committer)
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
