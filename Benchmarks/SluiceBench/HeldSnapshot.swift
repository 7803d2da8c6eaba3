import Foundation
import PGQueue
import TestKit

/// Two `sluice work` processes (concurrency 10 each) draining no-op jobs, without and then with a
/// `REPEATABLE READ` transaction holding its snapshot open (what `pg_dump`, a long report or a forgotten
/// psql session does): while it is open PostgreSQL can neither remove the dead rows of completed jobs nor
/// mark their index entries dead, so a claim that walks the claim index from its start walks all of them.
enum HeldSnapshot {
    struct Phase {
        var jobsPerSecond: Double
        /// Buffer hits on the claim index (jobs_claim_order) and on sluice.jobs's heap, per completed job.
        var claimIndexHitsPerJob: Double
        var heapHitsPerJob: Double
    }

    /// Each phase's rounds.
    struct Figures {
        var free: [Phase] = []
        var held: [Phase] = []
        var after: [Phase] = []
        /// Held, with every claim from the head of the queue (`SLUICE_CLAIM_RESCAN_SECONDS=0`), as before
        /// claims started past the last job claimed.
        var headOnly: [Phase] = []
    }

    static func run(binary: String, database: BenchDatabase, settings: Settings, on connection: PostgresConnection)
        throws -> Figures
    {
        var figures = Figures()
        for _ in 0..<settings.xminRounds {
            figures.free.append(try phase(binary, database, settings, hold: false, on: connection))
            figures.held.append(try phase(binary, database, settings, hold: true, on: connection))
            figures.after.append(try phase(binary, database, settings, hold: false, on: connection))
            figures.headOnly.append(
                try phase(binary, database, settings, hold: true, headOnly: true, on: connection))
        }
        return figures
    }

    private static func counters(_ connection: PostgresConnection) throws -> (index: Int64, heap: Int64) {
        // Statistics reach the views when a backend reports them (at the latest a second after its last
        // transaction), so wait that out before reading.
        Thread.sleep(forTimeInterval: 1.2)
        try connection.run(script: "SELECT pg_stat_clear_snapshot()", context: "fresh statistics")
        let row = try connection.query(
            """
            SELECT (SELECT idx_blks_hit + idx_blks_read FROM pg_statio_user_indexes
                    WHERE schemaname = 'sluice' AND indexrelname = 'jobs_claim_order'),
                   (SELECT heap_blks_hit + heap_blks_read FROM pg_statio_user_tables
                    WHERE schemaname = 'sluice' AND relname = 'jobs')
            """, context: "reading buffer counters"
        ).single()
        return (try row.decode(Int64.self, at: 0), try row.decode(Int64.self, at: 1))
    }

    /// Fills the queue, then drains it with two workers for at most `xminSeconds`, holding a snapshot from
    /// before the fill when `hold` is set; returns the rate over that window.
    private static func phase(
        _ binary: String, _ database: BenchDatabase, _ settings: Settings, hold: Bool, headOnly: Bool = false,
        on connection: PostgresConnection
    ) throws -> Phase {
        try connection.run(script: "VACUUM sluice.jobs", context: "vacuuming between phases")
        var snapshot: PostgresConnection?
        if hold {
            let holder = try database.connect()
            try holder.run(
                script: "BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM sluice.schema_version;",
                context: "taking a snapshot")
            snapshot = holder
        }
        defer { try? snapshot?.run(script: "ROLLBACK", context: "releasing the snapshot") }
        let queue = JobQueue()
        let batch = Array(repeating: NewJob(kind: "sluice.noop"), count: 1000)
        for _ in 0..<(settings.xminJobs / 1000) { _ = try queue.enqueue(batch, notify: false, on: connection) }
        // The probe's own reads of sluice.jobs are counted with the workers': it reads only rows completed
        // since its last probe, where a count(*) every 20 ms read the whole table (and the dead rows the
        // snapshot keeps) into the figure.
        let probe = try DrainProbe(database: database)
        let (indexBefore, heapBefore) = try counters(connection)
        let start = ContinuousClock.now
        let workers = try (0..<2).map { _ in
            try ChildProcess(
                path: binary, arguments: ["work"],
                environment: ChildProcess.inheriting([
                    "DATABASE_URL": database.url, "SLUICE_ADMIN_LISTEN": "off", "SLUICE_CONCURRENCY": "10",
                    "SLUICE_LOG_LEVEL": "error", "SLUICE_PERIODIC": "off",
                    "SLUICE_CLAIM_RESCAN_SECONDS": headOnly ? "0" : "1",
                ]), outputPath: nil)
        }
        var drained = false
        while !drained, (ContinuousClock.now - start) < .seconds(settings.xminSeconds) {
            usleep(20_000)
            drained = try probe.isDrained()
        }
        let seconds = (ContinuousClock.now - start).seconds
        let remaining = drained ? 0 : try probe.exactCount()
        for worker in workers { worker.stop() }
        let done = settings.xminJobs - remaining
        let (indexAfter, heapAfter) = try counters(connection)
        try connection.run(script: "TRUNCATE sluice.jobs, sluice.unique_keys", context: "emptying the queue")
        return Phase(
            jobsPerSecond: Double(done) / seconds,
            claimIndexHitsPerJob: Double(indexAfter - indexBefore) / Double(max(done, 1)),
            heapHitsPerJob: Double(heapAfter - heapBefore) / Double(max(done, 1)))
    }
}
