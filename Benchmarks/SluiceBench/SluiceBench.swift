import Foundation
import Logging
import PGQueue
import Synchronization
import TestKit

/// Sluice's queue benchmarks, each figure printed beside the same machine's plain-SQL ceiling measured in
/// the same run, rounds interleaved so that machine noise hits both sides alike; each figure is the median
/// of its rounds.
///
/// Runs against DATABASE_URL (`make bench` starts a throwaway PostgreSQL with default settings, fsync on)
/// in a database of its own. Sizes can be changed with SLUICE_BENCH_* variables (see `Settings`).
@main
struct SluiceBench {
    static func main() throws {
        let settings = try Settings(ProcessInfo.processInfo.environment)
        let database = try BenchDatabase(adminURL: settings.databaseURL)
        defer { database.drop() }
        let setup = try database.connect()
        let report = Report()
        report.header(connection: setup, settings: settings)
        let queue = JobQueue()
        let binary = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
            .appendingPathComponent("sluice").path
        if settings.sections.contains("queue") {
            try queueFigures(settings: settings, database: database, setup: setup, report: report, queue: queue)
        }
        if settings.sections.contains("pool") {
            try poolFigures(
                settings: settings, database: database, setup: setup, report: report, queue: queue, binary: binary)
        }
        if settings.sections.contains("depth") {
            try depthFigures(settings: settings, database: database, setup: setup, report: report, binary: binary)
        }
        if settings.sections.contains("usage") {
            try UsageRecording.seed(on: setup)
            let spread = try UsageRecording.run(database, clients: 10, calls: settings.usageCalls) { call in
                // Deterministic scatter over the users, so runs compare.
                "user_\((call &* 7919) % UsageRecording.users + 1)"
            }
            let hot = try UsageRecording.run(database, clients: 10, calls: settings.usageCalls) { _ in "user_1" }
            report.value(
                "record_usage, 10 clients, 10,000 users", "\(Int(spread.callsPerSecond).formatted()) calls/s")
            report.latency("  latency per call, 10,000 users", spread.latencies)
            report.value("record_usage, 10 clients, one hot user", "\(Int(hot.callsPerSecond).formatted()) calls/s")
            report.latency("  latency per call, one hot user", hot.latencies)
        }
        if settings.sections.contains("prune") {
            try reset(setup)
            let figures = try Pruning.run(
                binary: binary, database: database, jobs: settings.poolJobs, expired: settings.expiredRows,
                on: setup)
            report.rate(
                "burn-down of \(settings.poolJobs.formatted()) jobs while pruning 2 x \(settings.expiredRows.formatted())",
                [figures.burnDownWith], ceiling: [figures.burnDownWithout],
                note: "the same burn-down with nothing to prune")
            report.value(
                "  expired rows pruned, time, rate",
                "\(figures.prunedRows.formatted()) in \(String(format: "%.1f", figures.pruneSeconds)) s, "
                    + "\(Int(Double(figures.prunedRows) / figures.pruneSeconds).formatted()) rows/s")
        }
        if settings.sections.contains("webhooks") {
            try reset(setup)
            let ingest = try WebhookIngest.run(binary: binary, database: database, settings: settings, on: setup)
            report.pairedRate(
                "webhook ingest, \(settings.webhookConnections) connections, "
                    + "\(settings.webhookRounds) x \(settings.webhookSeconds) s (wrk)",
                ingest.requestsPerSecond, ceiling: ingest.insertCeiling,
                note: "pgbench 1-row INSERT of the same body, \(settings.webhookConnections) clients")
            report.value(
                "  webhook latency, \(ingest.bodyBytes)-byte signed events",
                String(
                    format: "p50 %.2f ms         p99 %.2f ms", percentile(ingest.p50Milliseconds, 0.5),
                    percentile(ingest.p99Milliseconds, 0.5)))
            report.value(
                "  the ceiling's own INSERT latency (pgbench --log)",
                String(
                    format: "p50 %.2f ms         p99 %.2f ms", percentile(ingest.ceilingP50Milliseconds, 0.5),
                    percentile(ingest.ceilingP99Milliseconds, 0.5)))
            report.value(
                "  requests, errors (non-2xx, socket), jobs; all rounds",
                "\(ingest.requests.formatted()), \(ingest.errors), \(ingest.jobs.formatted())")
            report.value(
                "  CPU of sluice receive per request (user + system)",
                String(format: "%.0f µs              target 60 µs", ingest.cpuMicrosecondsPerRequest))
            report.value("  peak RSS of sluice receive", "\(ingest.receiverPeakRSSKiB / 1024) MiB")
        }
        if settings.sections.contains("api") {
            try reset(setup)
            let api = try APIRequests.run(binary: binary, database: database, settings: settings, on: setup)
            report.rate(
                "GET /v1/me, 10 connections, \(APIRequests.users.formatted()) users (wrk)",
                [api.me.requestsPerSecond], ceiling: [api.cheapest.requestsPerSecond],
                note: "the same server's cheapest authenticated request (token verified, 400 before the database)",
                unit: "req/s", ceilingUnit: "req/s")
            report.rate(
                "  the same requests", [api.me.requestsPerSecond], ceiling: [api.accessQuery],
                note: "pgbench running billing.api_access itself, 10 clients", unit: "req/s", ceilingUnit: "queries/s")
            report.value(
                "  GET /v1/me latency",
                String(format: "p50 %.2f ms         p99 %.2f ms", api.me.p50, api.me.p99))
            report.value(
                "  GET /v1/me non-2xx or socket errors; the ceiling's 400s", "\(api.me.errors); \(api.cheapest.errors)")
            report.rate(
                "POST /v1/usage, 10 connections, one service key (wrk)", [api.usage.requestsPerSecond],
                ceiling: [api.usageSQL], note: "billing.record_usage from 10 plain SQL clients", unit: "req/s",
                ceilingUnit: "calls/s")
            report.value(
                "  POST /v1/usage latency, errors",
                String(format: "p50 %.2f ms  p99 %.2f ms  ", api.usage.p50, api.usage.p99) + "\(api.usage.errors)")
            report.value("  peak RSS of sluice api", "\(api.serverPeakRSSKiB / 1024) MiB")
        }
        if settings.sections.contains("outbound") {
            try reset(setup)
            let outbound = try OutboundDeliveries.run(binary: binary, database: database, settings: settings, on: setup)
            report.rate(
                "outbound deliveries of \(outbound.events.formatted()) events, concurrency 10",
                [outbound.deliveriesPerSecond], ceiling: [outbound.ceiling],
                note: "wrk posting the same signed body to the same endpoint, 10 connections", unit: "deliveries/s",
                ceilingUnit: "req/s")
            report.latency("  commit of the cause to delivery, one event every 5 ms", outbound.delays)
        }
        if settings.sections.contains("xmin") {
            try reset(setup)
            let xmin = try HeldSnapshot.run(binary: binary, database: database, settings: settings, on: setup)
            let title = "2 x sluice work, \(settings.xminJobs.formatted()) jobs, \(settings.xminSeconds) s at most"
            let free = xmin.free.map(\.jobsPerSecond)
            report.rate(
                "\(title), snapshot held", xmin.held.map(\.jobsPerSecond), ceiling: free,
                note: "the same drain with no snapshot held")
            report.rate(
                "  after the snapshot is released", xmin.after.map(\.jobsPerSecond), ceiling: free,
                note: "the same drain with no snapshot held")
            report.rate(
                "  held, every claim from the head (before)", xmin.headOnly.map(\.jobsPerSecond), ceiling: free,
                note: "the same drain with no snapshot held")
            for (name, phases) in [
                ("no snapshot", xmin.free), ("snapshot held", xmin.held), ("after", xmin.after),
                ("held, from the head", xmin.headOnly),
            ] {
                let index = phases.map(\.claimIndexHitsPerJob).sorted()[phases.count / 2]
                let heap = phases.map(\.heapHitsPerJob).sorted()[phases.count / 2]
                report.value(
                    "  buffer hits per job, \(name)", String(format: "claim index %.1f   jobs heap %.1f", index, heap))
            }
        }
        report.footer()
    }

    static func queueFigures(
        settings: Settings, database: BenchDatabase, setup: PostgresConnection, report: Report, queue: JobQueue
    ) throws {

        // Enqueue, one job per statement.
        var plainSingle: [Double] = []
        var sluiceSingle: [Double] = []
        var sluiceQuiet: [Double] = []
        var tableSingle: [Double] = []
        // The same row written straight into sluice.jobs: what the table itself costs, apart from the function.
        let tableInsert = PreparedStatement(
            name: "table_insert", sql: "INSERT INTO sluice.jobs (kind, payload) VALUES ($1, $2::jsonb)")
        let insert = PreparedStatement(
            name: "plain_insert", sql: "INSERT INTO bench_plain (payload) VALUES ($1::jsonb)")
        for _ in 0..<settings.rounds {
            try reset(setup)
            plainSingle.append(
                try rate(settings.singleInserts) {
                    for _ in 0..<settings.singleInserts { try setup.execute(insert, ["{}"], context: "plain insert") }
                })
            sluiceSingle.append(
                try rate(settings.singleInserts) {
                    for _ in 0..<settings.singleInserts { try queue.enqueue(NewJob(kind: "sluice.noop"), on: setup) }
                })
            sluiceQuiet.append(
                try rate(settings.singleInserts) {
                    for _ in 0..<settings.singleInserts {
                        try queue.enqueue(NewJob(kind: "sluice.noop"), notify: false, on: setup)
                    }
                })
            tableSingle.append(
                try rate(settings.singleInserts) {
                    for _ in 0..<settings.singleInserts {
                        try setup.execute(tableInsert, ["sluice.noop", "{}"], context: "table insert")
                    }
                })
        }
        report.rate("enqueue, 1 job per statement", sluiceSingle, ceiling: plainSingle, note: "plain 1-row INSERT")
        report.rate("  the same with notify => false", sluiceQuiet, ceiling: plainSingle, note: "plain 1-row INSERT")
        report.rate(
            "  the same", sluiceSingle, ceiling: tableSingle, note: "1-row INSERT into sluice.jobs itself")
        report.rate(
            "  INSERT into sluice.jobs itself", tableSingle, ceiling: plainSingle, note: "plain 1-row INSERT")

        // Enqueue in bulk, 1,000 jobs per statement.
        var plainBulk: [Double] = []
        var sluiceBulk: [Double] = []
        var tableBulk: [Double] = []
        let tableBulkInsert = PreparedStatement(
            name: "table_bulk",
            sql: "INSERT INTO sluice.jobs (kind, payload) SELECT 'sluice.noop', p FROM unnest($1::jsonb[]) AS p")
        let bulkInsert = PreparedStatement(
            name: "plain_bulk", sql: "INSERT INTO bench_plain (payload) SELECT * FROM unnest($1::jsonb[])")
        let payloads = Array(repeating: "{}", count: 1000)
        let jobs = Array(repeating: NewJob(kind: "sluice.noop"), count: 1000)
        for _ in 0..<settings.rounds {
            try reset(setup)
            plainBulk.append(
                try rate(settings.bulkInserts) {
                    for _ in 0..<(settings.bulkInserts / 1000) {
                        try setup.execute(bulkInsert, [payloads], context: "plain bulk insert")
                    }
                })
            sluiceBulk.append(
                try rate(settings.bulkInserts) {
                    for _ in 0..<(settings.bulkInserts / 1000) { try queue.enqueue(jobs, on: setup) }
                })
            tableBulk.append(
                try rate(settings.bulkInserts) {
                    for _ in 0..<(settings.bulkInserts / 1000) {
                        try setup.execute(tableBulkInsert, [payloads], context: "table bulk insert")
                    }
                })
        }
        report.rate("enqueue, 1,000 jobs per statement", sluiceBulk, ceiling: plainBulk, note: "plain 1,000-row INSERT")
        report.rate(
            "  the same", sluiceBulk, ceiling: tableBulk, note: "1,000-row INSERT into sluice.jobs itself")
        report.rate(
            "  INSERT into sluice.jobs itself", tableBulk, ceiling: plainBulk, note: "plain 1,000-row INSERT")

        // Burn-down: claim and complete with N threads.
        var plainBurn: [Double] = []
        var sluiceBurn: [Double] = []
        for _ in 0..<settings.burnDownRounds {
            try reset(setup)
            try fill(plain: true, count: settings.burnDownJobs, queue: queue, on: setup)
            plainBurn.append(try rate(settings.burnDownJobs) { try plainBurnDown(database, threads: settings.threads) })
            try fill(plain: false, count: settings.burnDownJobs, queue: queue, on: setup)
            sluiceBurn.append(
                try rate(settings.burnDownJobs) {
                    try sluiceBurnDown(database, queue: queue, threads: settings.threads, batch: settings.batch)
                })
            let left = try setup.query("SELECT count(*) FROM sluice.jobs", context: "count").single()
                .decode(Int.self, at: 0)
            precondition(left == 0, "the burn-down left \(left) jobs behind")
        }
        report.rate(
            "burn-down of \(settings.burnDownJobs.formatted()) jobs, \(settings.threads) threads, batch \(settings.batch)",
            sluiceBurn, ceiling: plainBurn, note: "plain SKIP LOCKED + DELETE of 50, \(settings.threads) clients")

        // Wake-up latency, samples interleaved.
        try reset(setup)
        let (bare, wake) = try measureLatencies(database, queue: queue, samples: settings.latencySamples)
        report.latency("bare LISTEN/NOTIFY round trip", bare)
        report.latency("enqueue to claim, idle claimer woken by NOTIFY", wake, reference: bare)
    }

    /// End to end through the real pool: `sluice work`, concurrency 10.
    static func poolFigures(
        settings: Settings, database: BenchDatabase, setup: PostgresConnection, report: Report, queue: JobQueue,
        binary: String
    ) throws {
        var plainPool: [Double] = []
        var leasedPool: [Double] = []
        var pool: [Double] = []
        var peakRSS = 0
        for _ in 0..<settings.poolRounds {
            try reset(setup)
            try fill(plain: true, count: settings.poolJobs, queue: queue, on: setup)
            plainPool.append(try rate(settings.poolJobs) { try plainBurnDown(database, threads: 10) })
            try fill(plain: false, count: settings.poolJobs, queue: queue, on: setup)
            leasedPool.append(try rate(settings.poolJobs) { try leasedBurnDown(database, threads: 10) })
            try fill(plain: false, count: settings.poolJobs, queue: queue, on: setup)
            let run = try PoolRun.burnDown(binary: binary, database: database)
            pool.append(Double(settings.poolJobs) / run.seconds)
            peakRSS = max(peakRSS, run.peakRSSKiB)
        }
        report.rate(
            "sluice work burn-down of \(settings.poolJobs.formatted()) jobs, concurrency 10", pool, ceiling: plainPool,
            note: "plain SKIP LOCKED + DELETE of 50, 10 clients")
        report.rate(
            "  the same", pool, ceiling: leasedPool,
            note: "plain SQL on sluice.jobs: lease 50 (UPDATE), then DELETE them, 10 clients")
        report.value("peak RSS of sluice work during the burn-down", "\(peakRSS / 1024) MiB")
        try reset(setup)
        let starts = try PoolRun.enqueueToStart(
            binary: binary, databaseURL: database.url, samples: settings.latencySamples, on: setup)
        report.latency("enqueue to start, sluice work idle", starts)
    }

    /// The same running `sluice work` kept at about 1,000 waiting jobs, then at the large depth.
    ///
    /// Each round is a fresh worker at 1,000 waiting, then at the large depth: rounds repeat the pair rather
    /// than the order, since draining the large depth back to 1,000 would take longer than both.
    static func depthFigures(
        settings: Settings, database: BenchDatabase, setup: PostgresConnection, report: Report, binary: String
    ) throws {
        var shallow: [Double] = []
        var deep: [Double] = []
        for _ in 0..<settings.depthRounds {
            // The last round's million completions are checkpointed before this round, not during it.
            try reset(setup)
            try setup.run(script: "CHECKPOINT", context: "checkpointing before a depth round")
            let depth = try PoolRun.depthRates(
                binary: binary, database: database, small: 1_000, large: settings.depthJobs, seconds: 5)
            shallow.append(depth.small)
            deep.append(depth.large)
        }
        report.pairedRate(
            "sluice work running, about 1,000 jobs waiting", shallow, ceiling: deep,
            note: "the same worker kept at about \(settings.depthJobs.formatted()) waiting (flat: 0.8x to 1.2x)",
            ceilingUnit: "jobs/s")
    }

    static func reset(_ connection: PostgresConnection) throws {
        try connection.run(script: "TRUNCATE bench_plain; TRUNCATE sluice.jobs", context: "resetting tables")
    }

    static func rate(_ count: Int, _ body: () throws -> Void) throws -> Double {
        let start = ContinuousClock.now
        try body()
        return Double(count) / (ContinuousClock.now - start).seconds
    }

    static func fill(plain: Bool, count: Int, queue: JobQueue, on connection: PostgresConnection) throws {
        var remaining = count
        while remaining > 0 {
            let batch = min(remaining, 10_000)
            if plain {
                try connection.query(
                    "INSERT INTO bench_plain (payload) SELECT '{}' FROM generate_series(1, $1)", [batch],
                    context: "filling the plain table")
            } else {
                try queue.enqueue(
                    Array(repeating: NewJob(kind: "sluice.noop"), count: batch), notify: false, on: connection)
            }
            remaining -= batch
        }
        try connection.run(
            script: plain ? "VACUUM ANALYZE bench_plain" : "VACUUM ANALYZE sluice.jobs", context: "vacuuming")
    }

    static func plainBurnDown(_ database: BenchDatabase, threads: Int) throws {
        try onThreads(threads) { _ in
            let connection = try database.connect()
            let take = PreparedStatement(
                name: "plain_take",
                sql: """
                    WITH picked AS (
                        SELECT id FROM bench_plain ORDER BY id LIMIT 50 FOR UPDATE SKIP LOCKED
                    )
                    DELETE FROM bench_plain b USING picked WHERE b.id = picked.id
                    """)
            while try connection.execute(take, context: "plain take").affectedRows > 0 {}
        }
    }

    /// The two writes a job with a lease needs, in plain SQL from `threads` clients with no work between
    /// them: claim 50 by setting their lease, then delete them. A worker that survives its own crash
    /// cannot do less; the one-DELETE ceiling above has nothing to give back if its client dies.
    static func leasedBurnDown(_ database: BenchDatabase, threads: Int) throws {
        try onThreads(threads) { _ in
            let connection = try database.connect()
            let lease = PreparedStatement(
                name: "plain_lease",
                sql: """
                    UPDATE sluice.jobs SET state = 'running', attempt = attempt + 1, locked_by = 'bench',
                                           locked_until = now() + interval '30 seconds'
                    WHERE id = ANY (ARRAY(
                        SELECT id FROM sluice.jobs
                        WHERE state = 'available' AND queue = 'default' AND run_at <= now()
                        ORDER BY priority, run_at, id LIMIT 50 FOR UPDATE SKIP LOCKED))
                    RETURNING id
                    """)
            let delete = PreparedStatement(
                name: "plain_delete", sql: "DELETE FROM sluice.jobs WHERE id = ANY ($1::bigint[])")
            while true {
                let ids = try connection.execute(lease, context: "plain lease").map { try $0.decode(Int64.self, at: 0) }
                guard !ids.isEmpty else { break }
                try connection.execute(delete, [ids], context: "plain delete")
            }
        }
    }

    static func sluiceBurnDown(_ database: BenchDatabase, queue: JobQueue, threads: Int, batch: Int) throws {
        try onThreads(threads) { _ in
            let connection = try database.connect()
            var running: [JobLease] = []
            repeat {
                running = try queue.claim(from: "default", limit: batch, completing: running, on: connection)
                    .claimed.map(\.lease)
            } while !running.isEmpty
        }
    }

    /// Alternates one bare NOTIFY round trip with one enqueue-to-claim, so both see the same machine.
    static func measureLatencies(_ database: BenchDatabase, queue: JobQueue, samples: Int) throws -> (
        bare: [Double], wake: [Double]
    ) {
        let bareArrived = WakeSignal()
        let jobsWake = WakeSignal()
        let listener = PostgresListener(
            connectionString: database.url, channels: ["bench", JobQueue.notificationChannel],
            logger: Logger(label: "bench")
        ) { event in
            guard case .notification(let note) = event else { return jobsWake.signal() }
            if note.channel == "bench" { bareArrived.signal() } else { jobsWake.signal() }
        }
        try listener.startAndWait()
        defer { listener.stop() }

        let claimedAt = Mutex<[Int64: ContinuousClock.Instant]>([:])
        let claimed = WakeSignal()
        let stop = Atomic<Bool>(false)
        let claimerDone = DispatchSemaphore(value: 0)
        Thread {
            defer { claimerDone.signal() }
            guard let connection = try? database.connect() else { return }
            while !stop.load(ordering: .relaxed) {
                if let jobs = try? queue.claim(from: "default", limit: 10, on: connection), !jobs.isEmpty {
                    let now = ContinuousClock.now
                    claimedAt.withLock { for job in jobs { $0[job.id] = now } }
                    _ = try? queue.complete(jobs.map(\.lease), on: connection)
                    claimed.signal()
                    continue
                }
                jobsWake.wait(timeout: 1)
            }
        }.start()
        Thread.sleep(forTimeInterval: 0.2)

        let producer = try database.connect()
        var bare: [Double] = []
        var wake: [Double] = []
        for _ in 0..<samples {
            var start = ContinuousClock.now
            try producer.run(script: "NOTIFY bench", context: "notify")
            if bareArrived.wait(timeout: 5) { bare.append((ContinuousClock.now - start).milliseconds) }
            Thread.sleep(forTimeInterval: 0.002)

            start = ContinuousClock.now
            let id = try queue.enqueue(NewJob(kind: "sluice.noop"), on: producer)
            if claimed.wait(timeout: 5), let at = claimedAt.withLock({ $0[id] }) {
                wake.append((at - start).milliseconds)
            }
            Thread.sleep(forTimeInterval: 0.002)
        }
        stop.store(true, ordering: .relaxed)
        jobsWake.signal()
        claimerDone.wait()
        return (bare, wake)
    }
}

/// Sizes, from SLUICE_BENCH_* variables.
struct Settings {
    var databaseURL: String
    var rounds: Int
    var singleInserts: Int
    var bulkInserts: Int
    var burnDownJobs: Int
    var burnDownRounds: Int
    var threads: Int
    var batch: Int
    var latencySamples: Int
    var poolJobs: Int
    var poolRounds: Int
    /// The deep queue of the flatness figure, beside 1,000.
    var depthJobs: Int
    var depthRounds: Int
    var webhookEvents: Int
    var usageCalls: Int
    var webhookConnections: Int
    var webhookSeconds: Int
    var webhookRounds: Int
    var expiredRows: Int
    var apiSeconds: Int
    var apiRounds: Int
    var outboundEvents: Int
    var outboundSeconds: Int
    var xminJobs: Int
    var xminSeconds: Int
    var xminRounds: Int
    /// Which parts to run: the program's arguments, or all of them when none is given.
    var sections: Set<String>
    static let allSections: Set<String> = [
        "queue", "pool", "depth", "usage", "prune", "webhooks", "api", "outbound", "xmin",
    ]

    /// Reads the sizes from `environment` and the parts from the program's arguments; throws for a part
    /// that does not exist, which would otherwise run nothing and say nothing.
    init(_ environment: [String: String]) throws {
        func number(_ name: String, _ fallback: Int) -> Int {
            environment[name].flatMap { Int($0) } ?? fallback
        }
        databaseURL = environment["DATABASE_URL"] ?? ""
        rounds = number("SLUICE_BENCH_ROUNDS", 5)
        singleInserts = number("SLUICE_BENCH_SINGLE", 2_000)
        bulkInserts = number("SLUICE_BENCH_BULK", 100_000)
        burnDownJobs = number("SLUICE_BENCH_JOBS", 1_000_000)
        burnDownRounds = number("SLUICE_BENCH_BURN_ROUNDS", 3)
        threads = number("SLUICE_BENCH_THREADS", 10)
        batch = number("SLUICE_BENCH_BATCH", 1000)
        latencySamples = number("SLUICE_BENCH_LATENCY_SAMPLES", 500)
        poolJobs = number("SLUICE_BENCH_POOL_JOBS", 100_000)
        poolRounds = number("SLUICE_BENCH_POOL_ROUNDS", 5)
        depthJobs = number("SLUICE_BENCH_DEPTH_JOBS", 1_000_000)
        depthRounds = max(1, number("SLUICE_BENCH_DEPTH_ROUNDS", 5))
        webhookEvents = number("SLUICE_BENCH_WEBHOOK_EVENTS", 250_000)
        usageCalls = number("SLUICE_BENCH_USAGE_CALLS", 50_000)
        webhookConnections = number("SLUICE_BENCH_WEBHOOK_CONNECTIONS", 50)
        webhookSeconds = number("SLUICE_BENCH_WEBHOOK_SECONDS", 10)
        webhookRounds = max(1, number("SLUICE_BENCH_WEBHOOK_ROUNDS", 3))
        expiredRows = number("SLUICE_BENCH_EXPIRED_ROWS", 1_000_000)
        apiSeconds = number("SLUICE_BENCH_API_SECONDS", 10)
        apiRounds = number("SLUICE_BENCH_API_ROUNDS", 3)
        outboundEvents = number("SLUICE_BENCH_OUTBOUND_EVENTS", 20_000)
        outboundSeconds = number("SLUICE_BENCH_OUTBOUND_SECONDS", 10)
        xminJobs = number("SLUICE_BENCH_XMIN_JOBS", 1_000_000)
        xminSeconds = number("SLUICE_BENCH_XMIN_SECONDS", 30)
        xminRounds = number("SLUICE_BENCH_XMIN_ROUNDS", 3)
        let chosen = Set(CommandLine.arguments.dropFirst())
        let unknown = chosen.subtracting(Self.allSections)
        guard unknown.isEmpty else {
            throw BenchFailure(
                "no benchmark part named \(unknown.sorted().joined(separator: ", ")); "
                    + "choose from \(Self.allSections.sorted().joined(separator: ", "))")
        }
        sections = chosen.isEmpty ? Self.allSections : chosen
    }
}
