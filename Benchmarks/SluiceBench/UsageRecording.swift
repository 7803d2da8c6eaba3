import Foundation
import PGQueue
import Synchronization
import TestKit

/// `billing.record_usage` from 10 clients, each call its own transaction (as a request path makes it):
/// spread over 10,000 subscribed users, and all on one hot user, whose counter row every call locks.
enum UsageRecording {
    struct Figures {
        var callsPerSecond: Double
        /// Milliseconds per call, as the caller saw it.
        var latencies: [Double]
    }

    static let users = 10_000

    /// 10,000 users, each linked to a customer with an active subscription on plan pro, whose api_calls
    /// are unlimited, so every call is allowed and counted.
    static func seed(on connection: PostgresConnection) throws {
        try connection.run(
            script: """
                INSERT INTO billing.users (id, email, version, rank)
                SELECT 'user_' || n, 'user' || n || '@example.com', 1, 1 FROM generate_series(1, \(users)) n;
                INSERT INTO billing.customer_links (customer_id, user_id, linked_by, event_id)
                SELECT 'cus_' || n, 'user_' || n, 'bench', 'bench' FROM generate_series(1, \(users)) n;
                INSERT INTO billing.subscriptions (id, customer_id, status, plan, current_period_start, current_period_end,
                                                   version, rank)
                SELECT 'sub_' || n, 'cus_' || n, 'active', 'pro', date_trunc('day', now()) - interval '3 days',
                       date_trunc('day', now()) + interval '27 days', 1, 1
                FROM generate_series(1, \(users)) n;
                INSERT INTO billing.plan_limits VALUES ('pro', 'api_calls', NULL);
                ANALYZE billing.users, billing.customer_links, billing.subscriptions;
                """,
            context: "seeding 10,000 subscribed users")
    }

    /// `calls` calls from `clients` threads; `user` picks the user of each call.
    static func run(
        _ database: BenchDatabase, clients: Int, calls: Int, user: @escaping @Sendable (Int) -> String
    ) throws -> Figures {
        let latencies = Mutex<[Double]>([])
        let perClient = calls / clients
        let run = UInt32.random(in: 0...UInt32.max)
        let started = ContinuousClock.now
        try onThreads(clients) { client in
            let connection = try database.connect()
            let record = PreparedStatement(
                name: "bench_record_usage", sql: "SELECT allowed FROM billing.record_usage($1, 'api_calls', 1, $2)")
            var mine: [Double] = []
            mine.reserveCapacity(perClient)
            for index in 0..<perClient {
                let call = client * perClient + index
                let start = ContinuousClock.now
                let allowed = try connection.execute(
                    record, [user(call), "bench-\(run)-\(call)"], context: "recording usage"
                ).single().decode(Bool.self, at: 0)
                mine.append((ContinuousClock.now - start).milliseconds)
                guard allowed else { throw BenchFailure("a call on an unlimited plan was denied") }
            }
            latencies.withLock { $0.append(contentsOf: mine) }
        }
        let seconds = (ContinuousClock.now - started).seconds
        return Figures(callsPerSecond: Double(perClient * clients) / seconds, latencies: latencies.withLock { $0 })
    }
}
