import Foundation
import JWTKit
import PGQueue
import TestKit

/// The app's API through the real `sluice api` (as `sluice_api`), driven by `wrk` from another process:
/// `GET /v1/me` with session tokens of 1,000 users, beside two ceilings of the same run (the same server's
/// cheapest authenticated request, and pgbench running the access query itself), and `POST /v1/usage`
/// beside `billing.record_usage` from as many plain SQL clients.
enum APIRequests {
    struct Figures {
        var me: WrkReport
        var cheapest: WrkReport
        var accessQuery: Double
        var usage: WrkReport
        var usageSQL: Double
        var serverPeakRSSKiB: Int
    }

    static let users = 1_000
    static let issuer = "https://clerk.bench.test"

    static func run(binary: String, database: BenchDatabase, settings: Settings, on connection: PostgresConnection)
        throws -> Figures
    {
        let folder = NSTemporaryDirectory() + "sluice-api-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        try database.createRoles(on: connection)
        if try connection.query("SELECT count(*) FROM billing.users", context: "counting users").single()
            .decode(Int.self, at: 0) == 0
        {
            try UsageRecording.seed(on: connection)
        }
        let (publicPEM, tokens) = try sessionTokens()
        let tokensPath = folder + "/tokens.txt"
        try tokens.joined(separator: "\n").write(toFile: tokensPath, atomically: true, encoding: .utf8)
        let key = try ChildProcess.run(
            binary, ["keys", "create", "--name", "bench", "--scopes", "usage:write"],
            environment: ["DATABASE_URL": database.url])
        guard key.status == 0,
            let secret = key.output.split(separator: "\n").first(where: { $0.hasPrefix("sk_sluice_") })
        else { throw BenchFailure("sluice keys create failed:\n\(key.output)") }

        let port = try WebhookIngest.freePort()
        let logPath = folder + "/api.log"
        let server = try ChildProcess(
            path: binary, arguments: ["api"],
            environment: ChildProcess.inheriting([
                "DATABASE_URL": database.url(as: "sluice_api"), "SLUICE_LISTEN": "127.0.0.1:\(port)",
                "SLUICE_ADMIN_LISTEN": "off", "CLERK_JWT_KEY": publicPEM.replacingOccurrences(of: "\n", with: "\\n"),
                "CLERK_ISSUER": issuer,
                // The figure is the server's cost, not a limit: a product's backend posting usage is one caller.
                "SLUICE_API_RATE_LIMIT": "1000000",
                "SLUICE_LOG_LEVEL": ProcessInfo.processInfo.environment["SLUICE_LOG_LEVEL"] ?? "info",
            ]),
            outputPath: logPath)
        var stopped = false
        defer { if !stopped { server.stop() } }
        try WebhookIngest.waitUntilListening(port: port, logPath: logPath)

        func wrk(_ script: String, _ environment: [String: String]) throws -> WrkReport {
            let result = try ChildProcess.run(
                "wrk",
                [
                    "-t2", "-c10", "-d\(settings.apiSeconds)s", "--latency", "-s",
                    WebhookIngest.repositoryRoot.appendingPathComponent("Benchmarks/wrk/\(script)").path,
                    "http://127.0.0.1:\(port)",
                ],
                environment: environment)
            guard result.status == 0 else { throw BenchFailure("wrk failed:\n\(result.output)") }
            return try WrkReport(result.output)
        }
        var me: [WrkReport] = []
        var cheapest: [WrkReport] = []
        var access: [Double] = []
        var usage: [WrkReport] = []
        var usageSQL: [Double] = []
        let pgbenchScript = folder + "/access.sql"
        try "\\set n random(1, \(users))\nSELECT billing.api_access('user_' || :n);\n".write(
            toFile: pgbenchScript, atomically: true, encoding: .utf8)
        for round in 0..<settings.apiRounds {
            me.append(try wrk("api-get.lua", ["SLUICE_BENCH_TOKENS": tokensPath, "SLUICE_BENCH_PATH": "/v1/me"]))
            // Verified like /v1/me, then refused (400) before any database work.
            cheapest.append(
                try wrk(
                    "api-get.lua", ["SLUICE_BENCH_TOKENS": tokensPath, "SLUICE_BENCH_PATH": "/v1/me/invoices?limit=0"]))
            access.append(
                try WebhookIngest.pgbench(
                    script: pgbenchScript, clients: 10, seconds: settings.apiSeconds, url: database.url))
            usage.append(
                try wrk(
                    "api-usage.lua",
                    [
                        "SLUICE_BENCH_KEY": String(secret),
                        "SLUICE_BENCH_RUN": "r\(round)-\(UInt32.random(in: 0...UInt32.max))",
                    ]))
            usageSQL.append(
                try UsageRecording.run(database, clients: 10, calls: settings.usageCalls) { call in
                    "user_\((call &* 7919) % UsageRecording.users + 1)"
                }.callsPerSecond)
        }
        let peak = server.peakRSSKiB
        server.stop()
        stopped = true
        return Figures(
            me: median(me), cheapest: median(cheapest), accessQuery: access.sorted()[access.count / 2],
            usage: median(usage), usageSQL: usageSQL.sorted()[usageSQL.count / 2], serverPeakRSSKiB: peak)
    }

    /// The round with the median rate.
    private static func median(_ reports: [WrkReport]) -> WrkReport {
        reports.sorted { $0.requestsPerSecond < $1.requestsPerSecond }[reports.count / 2]
    }

    /// An RSA key made with openssl, and an RS256 session token for each of `users` users, valid an hour.
    private static func sessionTokens() throws -> (publicPEM: String, tokens: [String]) {
        let pair = try RSAKeyPair()
        let (privatePEM, publicPEM) = (pair.privatePEM, pair.publicPEM)
        let tokens = try blocking {
            let keys = await JWTKeyCollection().add(
                rsa: try Insecure.RSA.PrivateKey(pem: privatePEM), digestAlgorithm: .sha256)
            var tokens: [String] = []
            for user in 1...users {
                tokens.append(
                    try await keys.sign(
                        SessionClaims(
                            sub: .init(value: "user_\(user)"), exp: .init(value: Date().addingTimeInterval(3600)),
                            iss: .init(value: issuer))))
            }
            return tokens
        }
        return (publicPEM, tokens)
    }

    /// The claims of a Clerk session token that the API reads.
    private struct SessionClaims: JWTPayload {
        var sub: SubjectClaim
        var exp: ExpirationClaim
        var iss: IssuerClaim

        func verify(using algorithm: some JWTAlgorithm) throws {}
    }

    /// Runs async work to its end from this synchronous benchmark.
    private static func blocking<Value: Sendable>(_ work: @escaping @Sendable () async throws -> Value) throws -> Value
    {
        let semaphore = DispatchSemaphore(value: 0)
        let outcome = Box<Result<Value, any Error>?>(nil)
        Task {
            let result: Result<Value, any Error>
            do { result = .success(try await work()) } catch { result = .failure(error) }
            outcome.value.withLock { $0 = result }
            semaphore.signal()
        }
        semaphore.wait()
        return try outcome.value.withLock { $0! }.get()
    }
}
