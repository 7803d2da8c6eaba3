import Jobs
import Logging
import PGQueue

/// Everything a `sluice` process is told, from the environment (systemd's `EnvironmentFile=`) and flags.
///
/// Built once at start-up by ``ConfigurationLoader``; a bad value stops start-up with one line that names
/// the variable and what it expects. Secrets are kept out of `description`.
struct SluiceConfiguration: Sendable {
    /// A libpq URI or conninfo; nil uses libpq's `PG*` variables and defaults.
    var databaseURL: String?
    /// The webhook receiver's address (`SLUICE_LISTEN`, default 127.0.0.1:8080).
    var listen: ListenAddress
    /// The webhook sources with signing secrets, each with its verifier; a source without any answers 404.
    var webhooks: WebhookVerifiers
    /// `STRIPE_MODE`: `live` or `test` makes the Stripe handler skip events of the other mode; nil applies both.
    var stripeMode: String?
    /// `STRIPE_API_KEY`, `STRIPE_API_BASE` and `STRIPE_RATE_LIMIT`, for the jobs that call Stripe.
    var stripe: StripeSettings
    /// Health, readiness and metrics (`SLUICE_ADMIN_LISTEN`, default 127.0.0.1:9090).
    var adminListen: ListenAddress
    /// Requests a second one caller of the app's API may make, twice that in a burst (`SLUICE_API_RATE_LIMIT`, 20).
    var apiRateLimit: Double
    /// Stripe actions a second one signed-in user may start through the API, twice that in a burst
    /// (`SLUICE_API_ACTION_RATE_LIMIT`, 1): they share one Stripe client and its rate limit with every user.
    var apiActionRateLimit: Double
    /// Origins whose pages may call the app's API from a browser (`SLUICE_CORS_ORIGINS`); empty: none.
    var corsOrigins: Set<String>
    /// Hosts that the redirect URLs of the app's API (`success_url`, `cancel_url`, `return_url`) may name
    /// (`SLUICE_ALLOWED_REDIRECT_HOSTS`, lower case); empty: every redirect URL is refused.
    var allowedRedirectHosts: Set<String>
    /// How long a Stripe action route of the app's API waits for its job before answering 202
    /// (`SLUICE_API_WAIT_SECONDS`, 10).
    var apiWaitSeconds: Double
    /// How the app's API verifies a signed-in user's Clerk session token; nil refuses every one (401).
    var clerkSession: ClerkSessionSettings?
    /// `SLUICE_NOTIFY_URL` and `SLUICE_NOTIFY_SECRET`: an endpoint for business events kept from the
    /// environment (serve and work write it at start).
    var notify: (url: String, secret: String)?
    /// The worker pool's settings: concurrency, queues, lease, poll, retention, periodic jobs.
    var pool: PoolSettings
    /// How long a graceful stop waits for running jobs (`SLUICE_SHUTDOWN_SECONDS`, 25).
    var shutdownSeconds: Double
    /// `SLUICE_LOG_LEVEL` (trace, debug, info, notice, warning, error, critical; default info).
    var logLevel: Logger.Level
    /// `SLUICE_TEST_JOBS=1` enables the crash and test job kinds, for fault tests only.
    var testJobs: Bool
}

/// Where a server listens, or that it is off.
enum ListenAddress: Sendable, Equatable, CustomStringConvertible {
    case off
    case address(host: String, port: Int)

    var description: String {
        switch self {
        case .off: "off"
        case .address(let host, let port): "\(host):\(port)"
        }
    }
}

/// The queues a worker claims from.
enum QueueSelection: Sendable, Equatable, CustomStringConvertible {
    /// Every queue that has jobs, sharing the process's concurrency.
    case all
    /// These queues, each with its own number of slots.
    case named([NamedQueue])

    struct NamedQueue: Sendable, Equatable {
        var name: String
        var concurrency: Int
    }

    var description: String {
        switch self {
        case .all: "all"
        case .named(let queues): queues.map { "\($0.name):\($0.concurrency)" }.joined(separator: ",")
        }
    }
}
