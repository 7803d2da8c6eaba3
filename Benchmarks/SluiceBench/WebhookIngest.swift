import Crypto
import Foundation
import PGQueue
import TestKit

/// Webhook ingest through the real receiver: distinct Stripe events, signed in advance into a file that
/// `wrk` posts from another process over 50 connections, beside the database's own rate of single-row
/// INSERTs of the same payload from as many `pgbench` clients, measured in the same run.
enum WebhookIngest {
    /// Every round's figures; the report takes their medians.
    struct Figures {
        var requestsPerSecond: [Double] = []
        var p50Milliseconds: [Double] = []
        var p99Milliseconds: [Double] = []
        var requests = 0
        /// Non-2xx answers and socket errors.
        var errors = 0
        /// Jobs in the queue after each receiver phase, summed: one per distinct accepted event.
        var jobs = 0
        var insertCeiling: [Double] = []
        /// The ceiling's own commit latency in each round: what PostgreSQL's WAL flushes cost a lone INSERT
        /// in the same run, checkpoints included.
        var ceilingP50Milliseconds: [Double] = []
        var ceilingP99Milliseconds: [Double] = []
        var receiverPeakRSSKiB = 0
        var bodyBytes = 0
        /// The receiver's CPU time (user and system) over every request it answered.
        var cpuSeconds = 0.0

        var cpuMicrosecondsPerRequest: Double { cpuSeconds * 1e6 / Double(max(requests, 1)) }
    }

    static let secret = "whsec_bench_5eb0c1d2e3f4a5b6c7d8e9f0"
    static let repositoryRoot = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// Rounds of the receiver phase and the ceiling phase, interleaved: the ceiling's rate moves with the
    /// machine from minute to minute (15,000 to 22,000 rows/s within one hour on 2026-12-03), so one phase
    /// of each compared whatever state the machine was in at two moments.
    static func run(binary: String, database: BenchDatabase, settings: Settings, on connection: PostgresConnection)
        throws -> Figures
    {
        let folder = NSTemporaryDirectory() + "sluice-ingest-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        // The receiver connects as deployed, as sluice_receiver, so the figure includes authorizing its batches.
        try database.createRoles(on: connection)
        let (prefix, suffix) = try eventTemplate()
        var figures = Figures(bodyBytes: prefix.utf8.count + suffix.utf8.count + 20)
        for round in 0..<settings.webhookRounds {
            try receiverPhase(
                round: round, binary: binary, database: database, settings: settings, folder: folder,
                template: (prefix, suffix), into: &figures, on: connection)
            try prepare(connection)
            let ceiling = try insertCeiling(
                database: database, body: prefix + "evt_ceiling" + suffix, clients: settings.webhookConnections,
                seconds: settings.webhookSeconds, logFolder: folder + "/ceiling-\(round)", on: connection)
            figures.insertCeiling.append(ceiling.rate)
            figures.ceilingP50Milliseconds.append(percentile(ceiling.latencies, 0.5))
            figures.ceilingP99Milliseconds.append(percentile(ceiling.latencies, 0.99))
        }
        return figures
    }

    /// One run of `wrk` against a fresh `sluice receive`, with events signed for this round.
    private static func receiverPhase(
        round: Int, binary: String, database: BenchDatabase, settings: Settings, folder: String,
        template: (prefix: String, suffix: String), into figures: inout Figures, on connection: PostgresConnection
    ) throws {
        let eventsPath = folder + "/events.tsv"
        try writeSignedEvents(
            count: settings.webhookEvents, prefix: template.prefix, suffix: template.suffix, to: eventsPath)
        defer { try? FileManager.default.removeItem(atPath: eventsPath) }
        try prepare(connection)

        let logPath = folder + "/receiver-\(round).log"
        let port = try freePort()
        let receiver = try ChildProcess(
            path: binary, arguments: ["receive"],
            environment: ChildProcess.inheriting([
                "DATABASE_URL": database.url(as: "sluice_receiver"), "SLUICE_LISTEN": "127.0.0.1:\(port)",
                "SLUICE_ADMIN_LISTEN": "off", "STRIPE_WEBHOOK_SECRET": secret,
                "SLUICE_LOG_LEVEL": ProcessInfo.processInfo.environment["SLUICE_LOG_LEVEL"] ?? "info",
            ]),
            outputPath: logPath)
        var stopped = false
        defer { if !stopped { receiver.stop() } }
        try waitUntilListening(port: port, logPath: logPath)
        let cpuBefore = receiver.cpuSeconds

        let threads = 2
        let wrk = try ChildProcess.run(
            "wrk",
            [
                "-t\(threads)", "-c\(settings.webhookConnections)", "-d\(settings.webhookSeconds)s", "--latency",
                "-s", repositoryRoot.appendingPathComponent("Benchmarks/wrk/post-events.lua").path,
                "http://127.0.0.1:\(port)",
            ],
            environment: ["SLUICE_BENCH_EVENTS": eventsPath, "WRK_THREADS": "\(threads)"])
        guard wrk.status == 0 else {
            throw BenchFailure("wrk failed (is it installed? make bench installs it):\n\(wrk.output)")
        }
        figures.receiverPeakRSSKiB = max(figures.receiverPeakRSSKiB, receiver.peakRSSKiB)
        figures.cpuSeconds += receiver.cpuSeconds - cpuBefore
        receiver.stop()
        stopped = true
        let report = try WrkReport(wrk.output)
        figures.requestsPerSecond.append(report.requestsPerSecond)
        figures.p50Milliseconds.append(report.p50)
        figures.p99Milliseconds.append(report.p99)
        figures.requests += report.requests
        figures.errors += report.errors
        let counts = try connection.query(
            """
            SELECT count(*), count(*) FILTER (WHERE enqueued_by IS DISTINCT FROM 'sluice_receiver')
            FROM sluice.jobs WHERE kind = 'stripe.event'
            """, context: "counting webhook jobs"
        ).single()
        figures.jobs += try counts.decode(Int.self, at: 0)
        // A user given in DATABASE_URL's query string wins over url(as:): the figure must be the deployed role's.
        guard try counts.decode(Int.self, at: 1) == 0 else {
            throw BenchFailure(
                "the receiver did not connect as sluice_receiver; give DATABASE_URL without a user option")
        }
        if report.requests > settings.webhookEvents {
            FileHandle.standardError.write(
                Data(
                    "webhook ingest: \(report.requests) requests for \(settings.webhookEvents) events, so some were duplicates; raise SLUICE_BENCH_WEBHOOK_EVENTS\n"
                        .utf8))
        }
    }

    /// Every phase, the receiver's and the ceiling's, starts from the same state: empty tables, the dead rows
    /// of earlier phases (or of the pruning section) vacuumed, and a fresh checkpoint, so that none pays for
    /// another's writes, and an autovacuum of the rows just added does not land in the next phase.
    private static func prepare(_ connection: PostgresConnection) throws {
        try connection.run(
            script: "TRUNCATE sluice.jobs, sluice.unique_keys, bench_plain", context: "emptying the tables")
        try connection.run(script: "VACUUM", context: "vacuuming before a webhook phase")
        try connection.run(script: "CHECKPOINT", context: "checkpointing before a webhook phase")
    }

    /// The `customer.updated` fixture as one line, split around its event id.
    private static func eventTemplate() throws -> (String, String) {
        let fixture = repositoryRoot.appendingPathComponent("Tests/Fixtures/stripe/events/customer_updated.json")
        let object = try JSONSerialization.jsonObject(with: Data(contentsOf: fixture))
        let line = String(
            decoding: try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]), as: UTF8.self)
        guard let id = line.range(of: #""id":"evt_1IlZRsJDPojXS6LN2AbFmnR4""#) else {
            throw BenchFailure("the customer_updated fixture has no event id to replace")
        }
        return (String(line[..<id.lowerBound]) + #""id":""#, "\"" + String(line[id.upperBound...]))
    }

    /// One `"<Stripe-Signature>\t<body>"` line per event, every event id distinct, signed now.
    private static func writeSignedEvents(count: Int, prefix: String, suffix: String, to path: String) throws {
        guard FileManager.default.createFile(atPath: path, contents: nil) else {
            throw BenchFailure("could not create \(path)")
        }
        let file = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        defer { try? file.close() }
        let key = SymmetricKey(data: Array(secret.utf8))
        let run = UInt32.random(in: 0...UInt32.max)
        let timestamp = Int(Date().timeIntervalSince1970)
        var chunk: [UInt8] = []
        for index in 0..<count {
            let body = Array((prefix + "evt_bench_\(run)_\(index)" + suffix).utf8)
            let mac = HMAC<SHA256>.authenticationCode(for: Array("\(timestamp).".utf8) + body, using: key)
            chunk.append(contentsOf: "t=\(timestamp),v1=".utf8)
            for byte in mac {
                chunk.append(hexDigits[Int(byte >> 4)])
                chunk.append(hexDigits[Int(byte & 0x0f)])
            }
            chunk.append(UInt8(ascii: "\t"))
            chunk.append(contentsOf: body)
            chunk.append(UInt8(ascii: "\n"))
            if chunk.count > 4 << 20 {
                try file.write(contentsOf: chunk)
                chunk.removeAll(keepingCapacity: true)
            }
        }
        try file.write(contentsOf: chunk)
        // On disk before the phase starts: written back later, it would compete with PostgreSQL's own writes.
        try file.synchronize()
    }

    private static let hexDigits = Array("0123456789abcdef".utf8)

    /// A port nobody listens on now (the kernel's pick for port 0), so the receiver's log level is free.
    static func freePort() throws -> Int {
        let (socket, port) = try Loopback.bind()
        close(socket)
        return port
    }

    static func waitUntilListening(port: Int, logPath: String) throws {
        for _ in 0..<300 {
            if let socket = Loopback.connect(port: port) {
                close(socket)
                return
            }
            usleep(50_000)
        }
        throw BenchFailure(
            "the server did not start: \((try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "")")
    }

    /// Single-row INSERTs of the same body as a parameter (`pgbench -M prepared`), from `clients` clients:
    /// their rate, and each transaction's latency in milliseconds (from pgbench's log in `logFolder`).
    private static func insertCeiling(
        database: BenchDatabase, body: String, clients: Int, seconds: Int, logFolder: String,
        on connection: PostgresConnection
    ) throws -> (rate: Double, latencies: [Double]) {
        try FileManager.default.createDirectory(atPath: logFolder, withIntermediateDirectories: true)
        let script = NSTemporaryDirectory() + "sluice-insert-\(UInt32.random(in: 0...UInt32.max)).sql"
        try "INSERT INTO bench_plain (payload) VALUES (:body);\n".write(
            toFile: script, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: script) }
        let rate = try pgbench(
            script: script, clients: clients, seconds: seconds, url: database.url, variables: ["body": body],
            logPrefix: logFolder + "/pgbench")
        return (rate, try pgbenchLatencies(folder: logFolder, name: "pgbench"))
    }

    /// The latencies pgbench logged (`--log`: one line per transaction, its third field in microseconds),
    /// in milliseconds.
    private static func pgbenchLatencies(folder: String, name: String) throws -> [Double] {
        var latencies: [Double] = []
        for file in try FileManager.default.contentsOfDirectory(atPath: folder) where file.hasPrefix(name + ".") {
            let text = try String(contentsOfFile: folder + "/" + file, encoding: .utf8)
            for line in text.split(separator: "\n") {
                let fields = line.split(separator: " ", maxSplits: 3)
                if fields.count > 2, let microseconds = Double(fields[2]) { latencies.append(microseconds / 1000) }
            }
        }
        return latencies
    }

    /// The transactions a second of `pgbench -M prepared` running `script` from `clients` clients; with a
    /// `logPrefix`, each transaction is logged to files starting with it.
    static func pgbench(
        script: String, clients: Int, seconds: Int, url: String, variables: [String: String] = [:],
        logPrefix: String? = nil
    ) throws -> Double {
        let pgbench = try postgresProgram("pgbench")
        let defines = variables.flatMap { ["-D", "\($0.key)=\($0.value)"] }
        // One transaction in ten is logged, so the log's writes hardly slow the ceiling they measure.
        let logging = logPrefix.map { ["--log", "--sampling-rate=0.1", "--log-prefix=\($0)"] } ?? []
        let result = try ChildProcess.run(
            pgbench,
            ["-n", "-M", "prepared", "-c", "\(clients)", "-j", "2", "-T", "\(seconds)"] + logging + defines
                + ["-f", script, url])
        guard result.status == 0,
            let line = result.output.split(separator: "\n").first(where: { $0.hasPrefix("tps = ") }),
            let tps = Double(line.dropFirst("tps = ".count).prefix { $0.isNumber || $0 == "." })
        else {
            throw BenchFailure("pgbench failed:\n\(result.output)")
        }
        return tps
    }

    private static func postgresProgram(_ name: String) throws -> String {
        let versions = (try? FileManager.default.contentsOfDirectory(atPath: "/usr/lib/postgresql")) ?? []
        for version in versions.sorted(by: { (Int($0) ?? 0) > (Int($1) ?? 0) }) {
            let path = "/usr/lib/postgresql/\(version)/bin/\(name)"
            if FileManager.default.isExecutableFile(atPath: path) { return path }
        }
        throw BenchFailure("\(name) not found under /usr/lib/postgresql; run 'make deps'")
    }
}

/// The figures of a `wrk --latency` run.
struct WrkReport {
    var requestsPerSecond: Double
    var p50: Double
    var p99: Double
    var requests: Int
    var errors: Int

    init(_ output: String) throws {
        var requestsPerSecond: Double?
        var p50: Double?
        var p99: Double?
        var requests: Int?
        var errors = 0
        for line in output.split(separator: "\n").map({ $0.trimmingCharacters(in: .whitespaces) }) {
            let words = line.split(separator: " ", omittingEmptySubsequences: true)
            if line.hasPrefix("Requests/sec:"), words.count >= 2 {
                requestsPerSecond = Double(words[1])
            } else if line.hasPrefix("50%"), words.count >= 2 {
                p50 = Self.milliseconds(words[1])
            } else if line.hasPrefix("99%"), words.count >= 2 {
                p99 = Self.milliseconds(words[1])
            } else if words.count >= 3, words[1] == "requests", words[2] == "in" {
                requests = Int(words[0])
            } else if line.hasPrefix("Non-2xx or 3xx responses:"), let count = words.last.flatMap({ Int($0) }) {
                errors += count
            } else if line.hasPrefix("Socket errors:") {
                // "Socket errors: connect 0, read 0, write 0, timeout 0"
                errors += words.compactMap { Int($0.trimmingCharacters(in: .punctuationCharacters)) }.reduce(0, +)
            }
        }
        guard let requestsPerSecond, let p50, let p99, let requests else {
            throw BenchFailure("could not read wrk's report:\n\(output)")
        }
        (self.requestsPerSecond, self.p50, self.p99, self.requests, self.errors) =
            (requestsPerSecond, p50, p99, requests, errors)
    }

    /// wrk prints latencies as `812.00us`, `4.21ms` or `1.02s`.
    private static func milliseconds(_ text: Substring) -> Double? {
        for (suffix, scale) in [("us", 0.001), ("ms", 1.0), ("s", 1000.0)] where text.hasSuffix(suffix) {
            if let value = Double(text.dropLast(suffix.count)) { return value * scale }
        }
        return nil
    }
}
