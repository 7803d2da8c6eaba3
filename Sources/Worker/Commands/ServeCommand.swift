import ArgumentParser
import Foundation
import Jobs

/// `sluice serve`: what systemd runs.
struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Run the webhook receiver, the worker pool, its housekeeping and the admin server.",
        discussion: """
            The one process a deployment needs. It receives Stripe and Clerk webhooks on SLUICE_LISTEN and
            commits each to the queue before answering; claims jobs from PostgreSQL, runs them, retries
            failures with backoff, moves jobs that use up their attempts to the dead letters, rescues jobs of
            workers that died; and serves /healthz, /readyz and /metrics on SLUICE_ADMIN_LISTEN. SIGTERM stops
            it gracefully (requests in flight are answered, running jobs get SLUICE_SHUTDOWN_SECONDS to
            finish); a second signal stops it at once.
            """
    )

    @OptionGroup var options: ConfigurationOptions

    func run() async throws {
        try await runService(options, runsPool: true, runsReceiver: true)
    }
}

/// `sluice work`: more workers on more hosts.
struct WorkCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "work",
        abstract: "Run the worker pool only, to add workers on more hosts sharing one database.",
        discussion: """
            Same pool and housekeeping as 'serve', without the webhook receiver. Several 'sluice work' processes
            on one host can each set SLUICE_ADMIN_LISTEN to a port of its own, to port 0 (a free port, logged at
            start) or to off.
            """
    )

    @OptionGroup var options: ConfigurationOptions

    func run() async throws {
        try await runService(options, runsPool: true, runsReceiver: false)
    }
}

/// `sluice receive`: the webhook receiver alone.
struct ReceiveCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "receive",
        abstract: "Run the webhook receiver only: verify, commit to the queue, answer.",
        discussion: """
            For a receiver that runs apart from the workers, for example under the least-privileged database
            role of deploy/roles.sql, which may enqueue and read the schema version and nothing else.
            POST /webhooks/stripe needs STRIPE_WEBHOOK_SECRET and POST /webhooks/clerk needs
            CLERK_WEBHOOK_SECRET; a route without its secret answers 404.
            """
    )

    @OptionGroup var options: ConfigurationOptions

    func run() async throws {
        try await runService(options, runsPool: false, runsReceiver: true)
    }
}

/// Loads the configuration (one clear line and exit status 78 when a value is bad) and runs the service.
func runService(_ options: ConfigurationOptions, runsPool: Bool, runsReceiver: Bool) async throws {
    let configuration = try loadConfiguration(options)
    if !runsPool, configuration.listen == .off {
        FileHandle.standardError.write(
            Data("sluice: configuration error: SLUICE_LISTEN: 'sluice receive' needs an address, got \"off\"\n".utf8))
        throw ExitCode(78)
    }
    let runtime = ProcessRuntime.bootstrap(logLevel: configuration.logLevel)
    runtime.logger.info(
        "Starting",
        metadata: [
            "listen": "\(runsReceiver ? configuration.listen : .off)", "webhooks": "\(configuration.webhooks)",
            "concurrency": "\(configuration.pool.concurrency)", "queues": "\(configuration.pool.queues)",
            "lease_s": "\(configuration.pool.leaseSeconds)", "admin": "\(configuration.adminListen)",
            "test_jobs": "\(configuration.testJobs)",
        ])
    try await ServiceRunner(
        configuration: configuration, runtime: runtime,
        registry: StandardJobs.registry(
            testJobs: configuration.testJobs, stripeMode: configuration.stripeMode, stripe: configuration.stripe,
            verifiers: configuration.webhooks),
        runsPool: runsPool, runsReceiver: runsReceiver
    ).run()
}

/// The configuration, or exit status 78 (EX_CONFIG, which the unit does not restart on) with one line
/// naming the variable.
func loadConfiguration(_ options: ConfigurationOptions) throws -> Configuration {
    do {
        return try options.configuration(environment: ProcessInfo.processInfo.environment)
    } catch {
        FileHandle.standardError.write(Data("sluice: configuration error: \(error)\n".utf8))
        throw ExitCode(78)
    }
}
