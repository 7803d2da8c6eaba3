import ArgumentParser
import Foundation
import JWTKit
import Jobs
import Logging
import PGQueue

/// A bad configuration value: names the variable and says what it expects.
struct ConfigurationError: Error, CustomStringConvertible {
    var variable: String
    var problem: String

    var description: String { "\(variable): \(problem)" }
}

/// The flags every long-running command shares; each one overrides its environment variable.
struct ConfigurationOptions: ParsableArguments {
    @Option(name: .customLong("database-url"), help: "libpq URI or conninfo. Env: DATABASE_URL.")
    var databaseURL: String?

    @Option(help: "Webhook receiver address, host:port, port 0 or 'off'. Env: SLUICE_LISTEN (127.0.0.1:8080).")
    var listen: String?

    @Option(help: "live or test: apply only Stripe events of this mode. Env: STRIPE_MODE (both).")
    var stripeMode: String?

    @Option(help: "Stripe API base URL. Env: STRIPE_API_BASE (https://api.stripe.com).")
    var stripeApiBase: String?

    @Option(help: "Requests per second to Stripe from this process. Env: STRIPE_RATE_LIMIT (25).")
    var stripeRateLimit: String?

    @Option(
        help:
            "Periodic jobs, kind@interval comma-separated, or off. Env: SLUICE_PERIODIC (stripe.reconcile@15m,stripe.report_usage@1m when STRIPE_API_KEY is set)."
    )
    var periodic: String?

    @Option(help: "Health and metrics address, host:port, port 0 or 'off'. Env: SLUICE_ADMIN_LISTEN (127.0.0.1:9090).")
    var adminListen: String?

    @Option(help: "Jobs running at once in this process. Env: SLUICE_CONCURRENCY (10).")
    var concurrency: String?

    @Option(help: "Queues to work, each optionally name:slots, comma-separated, or 'all'. Env: SLUICE_QUEUES (all).")
    var queues: String?

    @Option(help: "Seconds a claim holds a job before it may be rescued. Env: SLUICE_LEASE_SECONDS (30).")
    var leaseSeconds: String?

    @Option(help: "Seconds a graceful stop waits for running jobs. Env: SLUICE_SHUTDOWN_SECONDS (25).")
    var shutdownSeconds: String?

    @Option(
        help:
            "How long a completed job's unique key is remembered (7d, 12h, 30m, 45s). Env: SLUICE_UNIQUE_RETENTION (7d)."
    )
    var uniqueRetention: String?

    @Option(help: "Seconds between looks for work when no notification arrives. Env: SLUICE_POLL_SECONDS (1).")
    var pollSeconds: String?

    @Option(help: "Failed attempts kept in a job's error history. Env: SLUICE_ERROR_HISTORY (20).")
    var errorHistory: String?

    @Option(help: "trace, debug, info, notice, warning, error or critical. Env: SLUICE_LOG_LEVEL (info).")
    var logLevel: String?

    /// The configuration from these flags over `environment`.
    func configuration(environment: [String: String]) throws(ConfigurationError) -> SluiceConfiguration {
        var loader = ConfigurationLoader(environment: environment)
        return try loader.load(self)
    }
}

/// Reads each setting from its flag, else its environment variable, else its default, and validates it.
struct ConfigurationLoader {
    let environment: [String: String]

    mutating func load(_ flags: ConfigurationOptions) throws(ConfigurationError) -> SluiceConfiguration {
        if value("SLUICE_DEAD_LETTER_RETENTION", nil) != nil {
            // Silently pruning at the database's 30 days could delete dead letters an operator meant to keep.
            throw ConfigurationError(
                variable: "SLUICE_DEAD_LETTER_RETENTION",
                problem: "is no longer read: retention is the database setting every process shares; run "
                    + "UPDATE sluice.settings SET value = '30 days' WHERE key = 'dead_letter_retention' "
                    + "with your value, then unset the variable")
        }
        let concurrency = try integer("SLUICE_CONCURRENCY", flags.concurrency, default: 10, range: 1...10_000)
        let databaseURL = try databaseURL(flags.databaseURL)
        let webhooks = try webhookVerifiers()
        return SluiceConfiguration(
            databaseURL: databaseURL,
            listen: try listenAddress("SLUICE_LISTEN", flags.listen, default: "127.0.0.1:8080"),
            webhooks: webhooks,
            stripeMode: try stripeMode("STRIPE_MODE", flags.stripeMode),
            stripe: StripeSettings(
                apiKey: try secret("STRIPE_API_KEY"),
                baseURL: try stripeBase("STRIPE_API_BASE", flags.stripeApiBase),
                requestsPerSecond: try seconds("STRIPE_RATE_LIMIT", flags.stripeRateLimit, default: 25, minimum: 0.1)),
            adminListen: try listenAddress("SLUICE_ADMIN_LISTEN", flags.adminListen, default: "127.0.0.1:9090"),
            apiRateLimit: try seconds("SLUICE_API_RATE_LIMIT", nil, default: 20, minimum: 0.1),
            apiActionRateLimit: try seconds("SLUICE_API_ACTION_RATE_LIMIT", nil, default: 1, minimum: 0.01),
            corsOrigins: try corsOrigins("SLUICE_CORS_ORIGINS"),
            allowedRedirectHosts: try redirectHosts("SLUICE_ALLOWED_REDIRECT_HOSTS"),
            apiWaitSeconds: try seconds("SLUICE_API_WAIT_SECONDS", nil, default: 10, minimum: 0),
            clerkSession: try clerkSession(),
            notify: try notifyEndpoint(),
            pool: PoolSettings(
                connectionString: databaseURL,
                queues: try queueSelection("SLUICE_QUEUES", flags.queues, totalConcurrency: concurrency),
                concurrency: concurrency,
                leaseSeconds: try seconds("SLUICE_LEASE_SECONDS", flags.leaseSeconds, default: 30, minimum: 0.5),
                pollSeconds: try seconds("SLUICE_POLL_SECONDS", flags.pollSeconds, default: 1, minimum: 0.01),
                uniqueRetentionSeconds: try duration("SLUICE_UNIQUE_RETENTION", flags.uniqueRetention) ?? 7 * 86_400,
                errorHistoryLimit: try integer(
                    "SLUICE_ERROR_HISTORY", flags.errorHistory, default: 20, range: 1...10_000),
                periodic: try periodic(
                    "SLUICE_PERIODIC", flags.periodic, stripeConfigured: try secret("STRIPE_API_KEY") != nil),
                excludedQueues: webhooks.isEmpty ? [WebhookSource.queue] : [],
                claimRescanSeconds: try seconds("SLUICE_CLAIM_RESCAN_SECONDS", nil, default: 1, minimum: 0)),
            shutdownSeconds: try seconds("SLUICE_SHUTDOWN_SECONDS", flags.shutdownSeconds, default: 25, minimum: 0),
            logLevel: try logLevel("SLUICE_LOG_LEVEL", flags.logLevel),
            testJobs: value("SLUICE_TEST_JOBS", nil) == "1"
        )
    }

    /// `--database-url`, else `DATABASE_URL` or the file `DATABASE_URL_FILE` names (for a URL with a password).
    private func databaseURL(_ flag: String?) throws(ConfigurationError) -> String? {
        if let flag, !flag.isEmpty { return flag }
        return try secret("DATABASE_URL")
    }

    /// A secret: from the environment, or from the file that `<VARIABLE>_FILE` names (systemd's credentials,
    /// a mounted secret), never from a flag that `ps` would show.
    private func secret(_ variable: String) throws(ConfigurationError) -> String? {
        let direct = environment[variable].flatMap { $0.isEmpty ? nil : $0 }
        guard let path = environment["\(variable)_FILE"], !path.isEmpty else { return direct }
        guard direct == nil else {
            throw ConfigurationError(variable: variable, problem: "set it or \(variable)_FILE, not both")
        }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ConfigurationError(
                variable: "\(variable)_FILE", problem: "cannot read \(path); it must name a file this process can read")
        }
        let text = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        return text.isEmpty ? nil : text
    }

    private func value(_ variable: String, _ flag: String?) -> String? {
        if let flag, !flag.isEmpty { return flag }
        if let set = environment[variable], !set.isEmpty { return set }
        return nil
    }

    private func integer(
        _ variable: String, _ flag: String?, default fallback: Int, range: ClosedRange<Int>
    ) throws(ConfigurationError) -> Int {
        guard let text = value(variable, flag) else { return fallback }
        guard let number = Int(text), range.contains(number) else {
            throw ConfigurationError(
                variable: variable,
                problem: "expected a whole number from \(range.lowerBound) to \(range.upperBound), got \"\(text)\"")
        }
        return number
    }

    private func seconds(
        _ variable: String, _ flag: String?, default fallback: Double, minimum: Double
    ) throws(ConfigurationError) -> Double {
        guard let text = value(variable, flag) else { return fallback }
        guard let number = Double(text), number.isFinite, number >= minimum else {
            throw ConfigurationError(
                variable: variable, problem: "expected seconds, at least \(minimum), got \"\(text)\"")
        }
        return number
    }

    /// Reads `7d`, `12h`, `30m`, `45s`, `250ms` or plain seconds.
    private func duration(_ variable: String, _ flag: String?) throws(ConfigurationError) -> Double? {
        guard let text = value(variable, flag) else { return nil }
        guard let parsed = Self.parseDuration(text), parsed >= 0 else {
            throw ConfigurationError(
                variable: variable, problem: "expected a duration such as 7d, 12h, 30m, 45s or 250ms, got \"\(text)\"")
        }
        return parsed
    }

    static func parseDuration(_ text: String) -> Double? {
        let units: [(suffix: String, seconds: Double)] = [
            ("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600), ("d", 86_400), ("w", 604_800),
        ]
        for unit in units where text.hasSuffix(unit.suffix) {
            let number = text.dropLast(unit.suffix.count)
            // "5ms" must not be read as 5m followed by "s".
            if unit.suffix == "s", number.hasSuffix("m") { continue }
            if let value = Double(number) { return value * unit.seconds }
        }
        return Double(text)
    }

    private func listenAddress(
        _ variable: String, _ flag: String?, default fallback: String
    ) throws(ConfigurationError) -> ListenAddress {
        let text = value(variable, flag) ?? fallback
        if text == "off" { return .off }
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]),
            (0...65_535).contains(port)
        else {
            throw ConfigurationError(
                variable: variable, problem: "expected host:port (port 0 picks a free one) or off, got \"\(text)\"")
        }
        var host = String(text[..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        if host.isEmpty { host = "0.0.0.0" }
        return .address(host: host, port: port)
    }

    private func queueSelection(
        _ variable: String, _ flag: String?, totalConcurrency: Int
    ) throws(ConfigurationError) -> QueueSelection {
        guard let text = value(variable, flag), text != "all" else { return .all }
        var queues: [QueueSelection.NamedQueue] = []
        for entry in text.split(separator: ",") {
            let parts = entry.split(separator: ":", omittingEmptySubsequences: false)
            let name = parts[0].trimmingCharacters(in: .whitespaces)
            guard !name.isEmpty, parts.count <= 2 else {
                throw ConfigurationError(
                    variable: variable,
                    problem: "expected name[:slots],... such as webhooks:5,default:5, got \"\(text)\"")
            }
            var slots = 0
            if parts.count == 2 {
                guard let number = Int(parts[1].trimmingCharacters(in: .whitespaces)), number >= 1 else {
                    throw ConfigurationError(
                        variable: variable,
                        problem: "queue \(name): slots must be a whole number of at least 1, got \"\(text)\"")
                }
                slots = number
            }
            guard !queues.contains(where: { $0.name == name }) else {
                throw ConfigurationError(variable: variable, problem: "queue \(name) is listed twice")
            }
            queues.append(.init(name: name, concurrency: slots))
        }
        guard !queues.isEmpty else {
            throw ConfigurationError(variable: variable, problem: "names no queue; leave it unset to work all queues")
        }
        // Queues without a number share what SLUICE_CONCURRENCY leaves over, at least one slot each.
        let unsized = queues.filter { $0.concurrency == 0 }.count
        if unsized > 0 {
            let sized = queues.reduce(0) { $0 + $1.concurrency }
            let share = max(1, (totalConcurrency - sized) / unsized)
            for index in queues.indices where queues[index].concurrency == 0 { queues[index].concurrency = share }
        }
        return .named(queues)
    }

    /// A comma-separated list of secrets (old and new while one is rolled), from ``secret(_:)``. Problems
    /// name the variable and the position, never the secret.
    private func secrets(_ variable: String) throws(ConfigurationError) -> [String] {
        guard let text = try secret(variable) else { return [] }
        return text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
    }

    /// Exact origins, `scheme://host[:port]`, comma-separated; a wildcard would let any page read a user's
    /// answers, so there is none.
    private func corsOrigins(_ variable: String) throws(ConfigurationError) -> Set<String> {
        var origins: Set<String> = []
        for origin in (value(variable, nil) ?? "").split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces) }
        )
        where !origin.isEmpty {
            guard let url = URL(string: origin), let scheme = url.scheme, ["https", "http"].contains(scheme),
                url.host != nil, url.path.isEmpty, url.query == nil, url.fragment == nil, !origin.hasSuffix("/")
            else {
                throw ConfigurationError(
                    variable: variable,
                    problem: "\"\(origin)\" is not an origin such as https://app.example.com (no path, no wildcard)")
            }
            origins.insert(origin)
        }
        return origins
    }

    /// Host names (`app.example.com`, `localhost`), comma-separated; no scheme, port, path or wildcard.
    private func redirectHosts(_ variable: String) throws(ConfigurationError) -> Set<String> {
        var hosts: Set<String> = []
        for host in (value(variable, nil) ?? "").split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces) })
        where !host.isEmpty {
            guard host.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "." || $0 == "-" }), host.first != ".",
                host.last != "."
            else {
                throw ConfigurationError(
                    variable: variable,
                    problem: "\"\(host)\" is not a host name such as app.example.com (no scheme, port or wildcard)")
            }
            hosts.insert(host.lowercased())
        }
        return hosts
    }

    /// `CLERK_JWT_KEY` (or `_FILE`) or `CLERK_JWKS_URL`, with `CLERK_ISSUER` and `CLERK_AUTHORIZED_PARTIES`;
    /// nil without either.
    private func clerkSession() throws(ConfigurationError) -> ClerkSessionSettings? {
        let keys: ClerkSessionSettings.Keys
        let jwksURL = value("CLERK_JWKS_URL", nil)
        if let text = try secret("CLERK_JWT_KEY") {
            guard jwksURL == nil else {
                throw ConfigurationError(
                    variable: "CLERK_JWKS_URL", problem: "is set with CLERK_JWT_KEY; set one of the two")
            }
            // One line in an environment file: "\n" stands for a line break.
            let pem = text.replacingOccurrences(of: "\\n", with: "\n")
            guard (try? Insecure.RSA.PublicKey(pem: pem)) != nil else {
                throw ConfigurationError(
                    variable: "CLERK_JWT_KEY", problem: "is not an RSA public key in PEM (-----BEGIN PUBLIC KEY-----)")
            }
            keys = .pem(pem)
        } else if let jwksURL {
            guard let url = URL(string: jwksURL),
                url.scheme == "https" || (url.scheme == "http" && LoopbackHost.contains(url.host))
            else {
                throw ConfigurationError(
                    variable: "CLERK_JWKS_URL",
                    problem: "must be an https URL such as https://clerk.example.com/.well-known/jwks.json "
                        + "(http only on loopback)")
            }
            keys = .jwks(url: jwksURL)
        } else {
            return nil
        }
        guard let issuer = value("CLERK_ISSUER", nil),
            let url = URL(string: issuer), url.scheme == "https" || url.host == "127.0.0.1" || url.host == "localhost"
        else {
            throw ConfigurationError(
                variable: "CLERK_ISSUER",
                problem: "must be set with CLERK_JWT_KEY or CLERK_JWKS_URL: the instance's Frontend API URL (https://…)"
            )
        }
        let parties = (value("CLERK_AUTHORIZED_PARTIES", nil) ?? "").split(separator: ",").map {
            $0.trimmingCharacters(in: .whitespaces)
        }.filter { !$0.isEmpty }
        return ClerkSessionSettings(keys: keys, issuer: issuer, authorizedParties: parties)
    }

    /// `SLUICE_NOTIFY_URL` with `SLUICE_NOTIFY_SECRET` (or `_FILE`): both or neither.
    private func notifyEndpoint() throws(ConfigurationError) -> (url: String, secret: String)? {
        let url = value("SLUICE_NOTIFY_URL", nil)
        let secret = try secret("SLUICE_NOTIFY_SECRET")
        guard let url else {
            if secret == nil { return nil }
            throw ConfigurationError(variable: "SLUICE_NOTIFY_URL", problem: "must be set with SLUICE_NOTIFY_SECRET")
        }
        guard let secret else {
            throw ConfigurationError(
                variable: "SLUICE_NOTIFY_SECRET",
                problem:
                    "must be set with SLUICE_NOTIFY_URL: whsec_ and base64, as sluice endpoints rotate-secret prints")
        }
        if let problem = EndpointsCommand.checkURL(url) {
            throw ConfigurationError(variable: "SLUICE_NOTIFY_URL", problem: problem)
        }
        if (try? OutboundSigner(secrets: [secret])) == nil {
            throw ConfigurationError(
                variable: "SLUICE_NOTIFY_SECRET", problem: "is not whsec_ followed by the base64 of at least 16 bytes")
        }
        return (url, secret)
    }

    /// A verifier for each source whose secrets are set; a bad secret names its variable and position.
    private func webhookVerifiers() throws(ConfigurationError) -> WebhookVerifiers {
        var table: [WebhookSource: any WebhookVerifier] = [:]
        for entry in WebhookSourceEntry.all {
            let secrets = try secrets(entry.secretVariable)
            guard !secrets.isEmpty else { continue }
            do {
                table[entry.source] = try entry.makeVerifier(secrets)
            } catch {
                throw ConfigurationError(
                    variable: entry.secretVariable,
                    problem: "secret \(error.index + 1) of \(secrets.count) \(error.reason)")
            }
        }
        return WebhookVerifiers(table)
    }

    private func stripeMode(_ variable: String, _ flag: String?) throws(ConfigurationError) -> String? {
        guard let text = value(variable, flag) else { return nil }
        guard text == "live" || text == "test" else {
            throw ConfigurationError(variable: variable, problem: "expected live or test, got \"\(text)\"")
        }
        return text
    }

    private func stripeBase(_ variable: String, _ flag: String?) throws(ConfigurationError) -> String {
        guard let text = value(variable, flag) else { return "https://api.stripe.com" }
        guard let url = URL(string: text), let host = url.host,
            url.scheme == "https"
                || (url.scheme == "http" && LoopbackHost.contains(host))
        else {
            // The secret key travels in every request: plain http only to a fake on this machine.
            throw ConfigurationError(
                variable: variable,
                problem: "expected an https URL such as https://api.stripe.com (http only on loopback), got \"\(text)\""
            )
        }
        return text.hasSuffix("/") ? String(text.dropLast()) : text
    }

    private func periodic(_ variable: String, _ flag: String?, stripeConfigured: Bool) throws(ConfigurationError)
        -> [PeriodicSchedule]
    {
        let text =
            value(variable, flag)
            ?? "outbound.sweep@1m" + (stripeConfigured ? ",stripe.reconcile@15m,stripe.report_usage@1m" : "")
        guard text != "off" else { return [] }
        var schedules: [PeriodicSchedule] = []
        for entry in text.split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces) }) {
            let parts = entry.split(separator: "@", maxSplits: 1).map(String.init)
            guard parts.count == 2, !parts[0].isEmpty, let interval = Self.parseDuration(parts[1]), interval >= 1 else {
                throw ConfigurationError(
                    variable: variable,
                    problem:
                        "expected kind@interval entries such as stripe.reconcile@15m (at least 1s), or off, got \"\(text)\""
                )
            }
            schedules.append(PeriodicSchedule(kind: parts[0], interval: interval))
        }
        return schedules
    }

    private func logLevel(_ variable: String, _ flag: String?) throws(ConfigurationError) -> Logger.Level {
        guard let text = value(variable, flag) else { return .info }
        guard let level = Logger.Level(rawValue: text.lowercased()) else {
            throw ConfigurationError(
                variable: variable,
                problem: "expected trace, debug, info, notice, warning, error or critical, got \"\(text)\"")
        }
        return level
    }
}
