import Foundation
import Hummingbird
import Jobs
import Logging
import ServiceLifecycle
import Synchronization

/// Runs a long-lived `sluice` process: the worker pool (serve, work) and the admin server, with systemd
/// notification, watchdog pings, and a graceful stop on the first SIGTERM or SIGINT.
struct ServiceRunner {
    let configuration: Configuration
    let runtime: ProcessRuntime
    let registry: JobRegistry
    let runsPool: Bool

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

        let adminListening = OneShot<Int>()
        var services: [any Service] = []
        if case .address(let host, let port) = configuration.adminListen {
            let probe = DatabaseProbe(connectionString: configuration.databaseURL, logger: logger)
            services.append(
                AdminServer.application(
                    host: host, port: port, registry: runtime.registry, probe: probe, logger: logger
                ) { bound in
                    logger.info("Admin server listening", metadata: ["address": "\(host):\(bound)"])
                    adminListening.fulfil(bound)
                })
        } else {
            logger.info("Admin server off (SLUICE_ADMIN_LISTEN=off)")
        }
        let group = ServiceGroup(
            configuration: .init(
                services: services.map { .init(service: $0) }, gracefulShutdownSignals: [], cancellationSignals: [],
                logger: logger))

        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask {
                do {
                    try await group.run()
                } catch {
                    logger.critical("A server failed; exiting", metadata: ["error": "\(error)"])
                    exit(1)
                }
            }
            if !services.isEmpty { _ = await adminListening.value() }
            notifier.ready(status: runsPool ? "working" : "serving")
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
            if let pool {
                await stopOnThread(pool, gracePeriod: configuration.shutdownSeconds)
            }
            watchdog.cancel()
            await group.triggerGracefulShutdown()
            try await tasks.waitForAll()
        }
        logger.info("Stopped")
    }

    private var poolSettings: PoolSettings {
        PoolSettings(
            connectionString: configuration.databaseURL,
            queues: configuration.queues,
            concurrency: configuration.concurrency,
            leaseSeconds: configuration.leaseSeconds,
            pollSeconds: configuration.pollSeconds,
            uniqueRetentionSeconds: configuration.uniqueRetentionSeconds,
            deadLetterRetentionSeconds: configuration.deadLetterRetentionSeconds,
            errorHistoryLimit: configuration.errorHistoryLimit
        )
    }

    /// The pool's stop blocks on threads and the database; keep it off Swift concurrency's threads.
    private func stopOnThread(_ pool: WorkerPool, gracePeriod: Double) async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            Thread {
                pool.stop(gracePeriod: gracePeriod)
                continuation.resume()
            }.start()
        }
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
