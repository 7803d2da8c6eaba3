import Foundation
import PGQueue
import TestKit

/// `make bench BENCH=prune`: a million expired rows in each of two tables, pruned by the housekeeping of a
/// `sluice work` that drains a full queue at the same time. The ceiling is the same burn-down with nothing
/// to prune, measured in the same run.
enum Pruning {
    struct Figures {
        var burnDownWithout: Double
        var burnDownWith: Double
        var prunedRows: Int
        var pruneSeconds: Double
    }

    static func run(binary: String, database: BenchDatabase, jobs: Int, expired: Int, on connection: PostgresConnection)
        throws -> Figures
    {
        try fill(jobs: jobs, on: connection)
        let without = try PoolRun.burnDown(binary: binary, database: database)

        try connection.run(
            script: """
                INSERT INTO sluice.dead_letters (id, queue, kind, payload, attempt, max_attempts, reason, created_at, died_at)
                SELECT -g, 'default', 'bench.old', '{}', 1, 1, 'permanent_failure',
                       now() - interval '60 days', now() - interval '60 days'
                FROM generate_series(1, \(expired)) g;
                INSERT INTO billing.processed_events (source, event_id, type, outcome, processed_at)
                SELECT 'stripe', 'evt_bench_' || g, 'bench', 'ignored', now() - interval '120 days'
                FROM generate_series(1, \(expired)) g;
                ANALYZE sluice.dead_letters; ANALYZE billing.processed_events;
                """, context: "seeding expired rows")
        try fill(jobs: jobs, on: connection)
        let start = ContinuousClock.now
        let with = try PoolRun.burnDown(binary: binary, database: database)
        // The burn-down stops the worker when the queue is empty; a second one finishes the pruning.
        let remaining = try leftOver(on: connection)
        var pruneSeconds = (ContinuousClock.now - start).seconds
        if remaining > 0 {
            let worker = try ChildProcess(
                path: binary, arguments: ["work"],
                environment: ChildProcess.inheriting([
                    "DATABASE_URL": database.url, "SLUICE_ADMIN_LISTEN": "off", "SLUICE_LOG_LEVEL": "warning",
                ]), outputPath: nil)
            defer { worker.stop() }
            let deadline = ContinuousClock.now + .seconds(600)
            while try leftOver(on: connection) > 0, ContinuousClock.now < deadline { usleep(100_000) }
            pruneSeconds = (ContinuousClock.now - start).seconds
        }
        return Figures(
            burnDownWithout: Double(jobs) / without.seconds, burnDownWith: Double(jobs) / with.seconds,
            prunedRows: 2 * expired - (try leftOver(on: connection)), pruneSeconds: pruneSeconds)
    }

    private static func fill(jobs: Int, on connection: PostgresConnection) throws {
        try connection.query(
            """
            INSERT INTO sluice.jobs (kind, queue) SELECT 'sluice.noop', 'default' FROM generate_series(1, $1)
            """, [jobs], context: "filling the queue")
    }

    private static func leftOver(on connection: PostgresConnection) throws -> Int {
        try connection.query(
            """
            SELECT (SELECT count(*) FROM sluice.dead_letters WHERE kind = 'bench.old')
                 + (SELECT count(*) FROM billing.processed_events WHERE type = 'bench')
            """, context: "counting expired rows"
        ).single().decode(Int.self, at: 0)
    }
}
