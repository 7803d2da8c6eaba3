import PGQueue

/// Watches `sluice work` drain the benchmark's no-op jobs without reading the rows it already drained.
///
/// A `count(*)` or `NOT EXISTS` over `sluice.jobs` scans the heap from its first page, and while a queue
/// drains, the first pages hold nothing but the dead rows of completed jobs: probing every few
/// milliseconds that way cost the benchmark a core (more with a snapshot held, where no dead row is ever
/// pruned), taken from the worker it was timing and never from the plain ceiling. Ids only grow and a
/// completed job never comes back, so each probe here seeks in the primary key to where the last one
/// found the lowest live job, and reads only what was completed since.
final class DrainProbe {
    private let connection: PostgresConnection
    /// No live no-op job has a lower id.
    private var floor: Int64 = 0
    /// No unclaimed no-op job has a lower id (none is given back here: the no-op job never fails).
    private var waitingFloor: Int64 = 0

    // ORDER BY … LIMIT 1 rather than min(): a plan made on an empty queue aggregated every row past the
    // floor, which on a million waiting jobs took a quarter of a second a probe.
    private static let lowest = PreparedStatement(
        name: "bench_probe_lowest",
        sql: "SELECT id FROM sluice.jobs WHERE id >= $1 AND kind = 'sluice.noop' ORDER BY id LIMIT 1")
    // `state || ''`, not `state`: with `state = 'available'` the claim index (partial on it) matched too,
    // and the plan kept from a queue of 1,000 waiting jobs read all of them there and sorted them by id,
    // every millisecond: 0.9 ms a probe at that depth, and 280 ms at a million, where the depth benchmark's
    // probes then took a third of PostgreSQL's time and its top-ups ran twice a second.
    private static let lowestWaiting = PreparedStatement(
        name: "bench_probe_lowest_waiting",
        sql: """
            SELECT id FROM sluice.jobs WHERE id >= $1 AND kind = 'sluice.noop' AND state || '' = 'available'
            ORDER BY id LIMIT 1
            """)
    private static let count = PreparedStatement(
        name: "bench_probe_count",
        sql: "SELECT count(*) FROM sluice.jobs WHERE id >= $1 AND kind = 'sluice.noop'")

    init(database: BenchDatabase) throws {
        // Index scans only: a plan made while the queue was empty must not become a scan of the heap.
        connection = try PostgresConnection(connectionString: database.url, sessionSettings: JobQueue.sessionSettings)
    }

    /// The lowest id of a no-op job still waiting or running; nil once none is.
    func lowestLiveID() throws -> Int64? {
        try seek(Self.lowest, from: &floor, context: "finding the lowest live job")
    }

    /// The lowest id of a no-op job not yet claimed; nil when none waits. Claims take equal jobs in id
    /// order, so this reads only the jobs claimed since the last call.
    func lowestWaitingID() throws -> Int64? {
        waitingFloor = max(waitingFloor, floor)
        return try seek(Self.lowestWaiting, from: &waitingFloor, context: "finding the lowest waiting job")
    }

    /// Runs a `… WHERE id >= $1 … ORDER BY id LIMIT 1` seek from `floor`, and raises `floor` to what it found.
    private func seek(_ statement: PreparedStatement, from floor: inout Int64, context: String) throws -> Int64? {
        let rows = try connection.execute(statement, [floor], context: context)
        guard let id = try rows.first?.decode(Int64.self, at: 0) else { return nil }
        floor = id
        return id
    }

    /// Whether every no-op job is done.
    func isDrained() throws -> Bool { try lowestLiveID() == nil }

    /// The no-op jobs still waiting or running, counted exactly (reads every live one: call it once per
    /// phase, not in a loop).
    func exactCount() throws -> Int {
        try connection.execute(Self.count, [floor], context: "counting live jobs").single().decode(Int.self, at: 0)
    }
}
