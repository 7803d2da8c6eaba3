import Foundation
import Hummingbird
import Jobs
import Logging
import ServiceLifecycle
import Synchronization

/// Runs a long-lived `sluice` process: the webhook receiver (serve, receive), the worker pool (serve,
/// work) and the admin server, with systemd notification, watchdog pings, and a graceful stop on the first
/// SIGTERM or SIGINT.
///
/// The stop runs in dependency order: the receiver stops taking requests and answers those in flight,
/// the group committer commits what is pending, the pool lets running jobs finish, and the admin server
/// goes last so health and metrics stay visible throughout.
struct ServiceRunner {
    let configuration: Configuration
    let runtime: ProcessRuntime
    let registry: JobRegistry
    let runsPool: Bool
    let runsReceiver: Bool

    func run() async throws {
        let logger = runtime.logger
        let notifier = SystemdNotifier()
        let signals = SignalWatcher { signal in
            logger.critical(
                "Second stop signal; exiting at once, running jobs will be rescued", metadata: ["signal": "\(signal)"])
        }

        let pool: WorkerPool? =
            runsPool
            ? WorkerPool(settings: poolSettings, registry: registry, metrics: runtime.metrics, logger: logger) : nil
        pool?.start()

        var listening: [OneShot<Int>] = []
        let receiving = receiverServer(logger: logger, listening: &listening)
        let receiver = receiving.map { ServerGroup([$0.server], logger: logger) }
        let admin = adminServer(logger: logger, listening: &listening).map { ServerGroup([$0], logger: logger) }

        for server in listening { _ = await server.value() }
        notifier.ready(
            status: [runsReceiver ? "receiving" : nil, runsPool ? "working" : nil].compactMap { $0 }.joined(
                separator: ", "))
        logger.info("Ready", metadata: ["pid": "\(getpid())"])

        let watchdog = Task {
            guard let interval = SystemdNotifier.watchdogInterval() else { return }
            while !Task.isCancelled {
                if pool?.isHealthy(within: interval) ?? true { notifier.watchdog() }
                try? await Task.sleep(for: .milliseconds(Int(interval * 500)))
            }
        }

        let signal = await signals.firstSignalReceived()
        logger.info(
            "Stopping gracefully; a second signal stops at once",
            metadata: ["signal": "\(signal)", "grace_s": "\(configuration.shutdownSeconds)"])
        notifier.stopping()
        if let receiver, let committer = receiving?.committer {
            await receiver.stop()
            await onThread { committer.stop() }
        }
        if let pool {
            let grace = configuration.shutdownSeconds
            await onThread { pool.stop(gracePeriod: grace) }
        }
        watchdog.cancel()
        await admin?.stop()
        logger.info("Stopped")
    }

    /// The webhook receiver and its committer, when this process receives; logs which routes are on.
    private func receiverServer(
        logger: Logger, listening: inout [OneShot<Int>]
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
        committer.start()
        let bound = OneShot<Int>()
        listening.append(bound)
        let receiver = WebhookReceiver(
            sources: WebhookSourceEntry.all.map(\.source), verifiers: configuration.webhooks, committer: committer,
            metrics: runtime.metrics, logger: logger)
        let server = receiver.application(host: host, port: port) { port in
            logger.info("Webhook receiver listening", metadata: ["address": "\(host):\(port)"])
            bound.fulfil(port)
        }
        return (server, committer)
    }

    private func adminServer(logger: Logger, listening: inout [OneShot<Int>]) -> (any Service)? {
        guard case .address(let host, let port) = configuration.adminListen else {
            logger.info("Admin server off (SLUICE_ADMIN_LISTEN=off)")
            return nil
        }
        let bound = OneShot<Int>()
        listening.append(bound)
        let probe = DatabaseProbe(connectionString: configuration.databaseURL, logger: logger)
        return AdminServer.application(host: host, port: port, registry: runtime.registry, probe: probe, logger: logger)
        { port in
            logger.info("Admin server listening", metadata: ["address": "\(host):\(port)"])
            bound.fulfil(port)
        }
    }

    private var poolSettings: PoolSettings {
        PoolSettings(
            connectionString: configuration.databaseURL,
            queues: configuration.queues,
            concurrency: configuration.concurrency,
            leaseSeconds: configuration.leaseSeconds,
            pollSeconds: configuration.pollSeconds,
            uniqueRetentionSeconds: configuration.uniqueRetentionSeconds,
            errorHistoryLimit: configuration.errorHistoryLimit,
            periodic: configuration.periodic,
            // Its events are verified again against the webhook secrets: without any, leave them to others.
            excludedQueues: configuration.webhooks.isEmpty ? [WebhookSource.queue] : []
        )
    }

}

/// Blocking work (joining threads, waiting on the database) kept off Swift concurrency's threads.
private func onThread(_ work: @escaping @Sendable () -> Void) async {
    await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
        Thread {
            work()
            continuation.resume()
        }.start()
    }
}

/// Servers run as a `ServiceGroup` of their own, so each group can be stopped at its point in the
/// shutdown order. A server that fails to run (its port taken) ends the process.
private struct ServerGroup {
    private let group: ServiceGroup
    private let running: Task<Void, Never>

    init(_ services: [any Service], logger: Logger) {
        let group = ServiceGroup(
            configuration: .init(
                services: services.map { .init(service: $0) }, gracefulShutdownSignals: [], cancellationSignals: [],
                logger: logger))
        self.group = group
        running = Task {
            do {
                try await group.run()
            } catch {
                logger.critical("A server failed; exiting", metadata: ["error": "\(error)"])
                exit(1)
            }
        }
    }

    /// Stops taking connections, lets requests in flight finish, and returns once the servers have stopped.
    func stop() async {
        await group.triggerGracefulShutdown()
        await running.value
    }
}

/// A value set once and awaited by one task.
final class OneShot<Value: Sendable>: Sendable {
    private let state = Mutex<(value: Value?, waiter: CheckedContinuation<Value, Never>?)>((nil, nil))

    func fulfil(_ value: Value) {
        let waiter = state.withLock { state -> CheckedContinuation<Value, Never>? in
            guard state.value == nil else { return nil }
            state.value = value
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume(returning: value)
    }

    func value() async -> Value {
        await withCheckedContinuation { continuation in
            let ready = state.withLock { state -> Value? in
                if state.value == nil { state.waiter = continuation }
                return state.value
            }
            if let ready { continuation.resume(returning: ready) }
        }
    }
}
