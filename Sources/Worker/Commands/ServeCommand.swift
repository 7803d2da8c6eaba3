import ArgumentParser
import Foundation
import Jobs
import PGQueue

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
        try await runService(options, parts: [.pool, .receiver, .api])
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
        try await runService(options, parts: [.pool])
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
        try await runService(options, parts: [.receiver])
    }
}

/// `sluice api`: the app's API alone.
struct APICommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "api",
        abstract: "Run the app's API only (under /v1 on SLUICE_LISTEN), to scale it apart from the workers.",
        discussion: """
            Connects as the least-privileged login role sluice_api of deploy/roles.sql (DATABASE_URL), never as
            the schema's owner: it refuses to start as a role that owns schema sluice or is a superuser.
            Services call it with keys from 'sluice keys create'; the document is GET /v1/openapi.yaml.
            """
    )

    @OptionGroup var options: ConfigurationOptions

    func run() async throws {
        let configuration = try loadConfiguration(options)
        do {
            let connection = try PostgresConnection(connectionString: configuration.databaseURL)
            let owner = try connection.query(
                """
                SELECT r.rolsuper OR pg_has_role(current_user, n.nspowner, 'MEMBER')
                FROM pg_roles r, pg_namespace n WHERE r.rolname = current_user AND n.nspname = 'sluice'
                """, context: "checking the API's role"
            ).first?.decode(Bool.self, at: 0)
            connection.close()
            if owner ?? false {
                FileHandle.standardError.write(
                    Data(
                        ("sluice: configuration error: DATABASE_URL: 'sluice api' must not connect as the schema's owner "
                            + "or a superuser; connect as sluice_api (deploy/roles.sql)\n").utf8))
                throw ExitCode(78)
            }
        } catch let error as PostgresError {
            FileHandle.standardError.write(Data("sluice: cannot check the API's database role: \(error)\n".utf8))
            throw ExitCode(69)
        }
        try await runService(options, parts: [.api])
    }
}

/// Loads the configuration (one clear line and exit status 78 when a value is bad) and runs the service.
func runService(_ options: ConfigurationOptions, parts: ServiceRunner.Parts) async throws {
    let configuration = try loadConfiguration(options)
    if !parts.contains(.pool), configuration.listen == .off {
        let command = parts.contains(.receiver) ? "receive" : "api"
        FileHandle.standardError.write(
            Data("sluice: configuration error: SLUICE_LISTEN: 'sluice \(command)' needs an address, got \"off\"\n".utf8)
        )
        throw ExitCode(78)
    }
    let runtime = ProcessRuntime.bootstrap(logLevel: configuration.logLevel)
    runtime.logger.info(
        "Starting",
        metadata: [
            "listen": "\(parts.isDisjoint(with: [.receiver, .api]) ? .off : configuration.listen)",
            "webhooks": "\(configuration.webhooks)",
            "concurrency": "\(configuration.pool.concurrency)", "queues": "\(configuration.pool.queues)",
            "lease_s": "\(configuration.pool.leaseSeconds)", "admin": "\(configuration.adminListen)",
            "test_jobs": "\(configuration.testJobs)",
        ])
    try await ServiceRunner(
        configuration: configuration, runtime: runtime,
        registry: StandardJobs.registry(
            testJobs: configuration.testJobs, stripeMode: configuration.stripeMode, stripe: configuration.stripe,
            verifiers: configuration.webhooks),
        parts: parts
    ).run()
}

/// The configuration, or exit status 78 (EX_CONFIG, which the unit does not restart on) with one line
/// naming the variable.
func loadConfiguration(_ options: ConfigurationOptions) throws -> SluiceConfiguration {
    do {
        return try options.configuration(environment: ProcessInfo.processInfo.environment)
    } catch {
        FileHandle.standardError.write(Data("sluice: configuration error: \(error)\n".utf8))
        throw ExitCode(78)
    }
}
