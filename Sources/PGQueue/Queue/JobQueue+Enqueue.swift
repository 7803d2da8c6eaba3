extension JobQueue {
    static let enqueueStatement = PreparedStatement(
        name: "sluice_enqueue",
        sql: """
            SELECT sluice.enqueue($1::text, $2::jsonb, $3::text, $4::integer,
                                  coalesce($5::timestamptz, now()), $6::integer, $7::text, $8::boolean)
            """
    )

    static let enqueueManyStatement = PreparedStatement(
        name: "sluice_enqueue_many",
        sql: """
            SELECT sluice.enqueue_many($1::text[], $2::jsonb[], $3::text[], $4::integer[],
                                       $5::timestamptz[], $6::integer[], $7::text[], $8::boolean)
            """
    )

    static let enqueueUniqueStatement = PreparedStatement(
        name: "sluice_enqueue_unique",
        sql: """
            SELECT ordinal, job_id, enqueued
            FROM sluice.enqueue_unique($1::text[], $2::jsonb[], $3::text[], $4::text[], $5::integer[],
                                       $6::timestamptz[], $7::integer[], $8::boolean)
            """
    )

    /// Adds one job and returns its id (the existing job's id when its unique key is taken).
    ///
    /// - Parameter notify: wake idle workers when the transaction commits; `false` leaves the job to
    ///   their polling, which spares PostgreSQL the commit serialisation that notifications cost.
    /// - Throws: `PostgresError` with SQLSTATE `22023` when the payload is not a JSON object or another
    ///   argument is out of range.
    @discardableResult
    public func enqueue(_ job: NewJob, notify: Bool = true, on connection: PostgresConnection) throws(PostgresError)
        -> Int64
    {
        let rows = try connection.execute(
            Self.enqueueStatement,
            [job.kind, job.payload, job.queue, job.priority, job.runAt, job.maxAttempts, job.uniqueKey, notify],
            context: "enqueueing a \(job.kind) job"
        )
        return try rows.single().decode(Int64.self, at: 0)
    }

    /// Adds many jobs in one statement and returns their ids in the same order.
    @discardableResult
    public func enqueue(_ jobs: [NewJob], notify: Bool = true, on connection: PostgresConnection) throws(PostgresError)
        -> [Int64]
    {
        guard !jobs.isEmpty else { return [] }
        let hasUniqueKeys = jobs.contains { $0.uniqueKey != nil }
        let rows = try connection.execute(
            Self.enqueueManyStatement,
            [jobs.map(\.kind), jobs.map(\.payload)] + Self.optionalColumns(jobs)
                + [hasUniqueKeys ? jobs.map(\.uniqueKey) : nil, notify],
            context: "enqueueing \(jobs.count) jobs"
        )
        var ids: [Int64] = []
        ids.reserveCapacity(rows.count)
        for row in rows {
            ids.append(try row.decode(Int64.self, at: 0))
        }
        return ids
    }

    /// Adds many jobs that each carry a unique key, in one statement (one transaction, one commit when the
    /// connection is not inside a transaction), and says for each whether it was added.
    ///
    /// The rules are those of ``enqueue(_:notify:on:)`` with a unique key: a key held by a waiting or running
    /// job, or by one that completed within the retention period, adds nothing and reports that job's id.
    /// A key that appears twice in `jobs` adds one job; the later position reports a duplicate. Keys are
    /// locked in sorted order, so concurrent batches sharing keys do not deadlock with each other.
    ///
    /// - Parameter jobs: jobs whose `uniqueKey` is set and not empty.
    /// - Returns: one result per job, in the order of `jobs`.
    /// - Throws: `PostgresError` with SQLSTATE `22023` when a job has no unique key, its payload is not a
    ///   JSON object or another argument is out of range; `40001` in the rare case that a key stayed
    ///   contended for three rounds (call again).
    public func enqueueUnique(_ jobs: [NewJob], notify: Bool = true, on connection: PostgresConnection)
        throws(PostgresError) -> [UniqueEnqueueResult]
    {
        guard !jobs.isEmpty else { return [] }
        let rows = try connection.execute(
            Self.enqueueUniqueStatement,
            [jobs.map(\.kind), jobs.map(\.payload), jobs.map(\.uniqueKey)] + Self.optionalColumns(jobs) + [notify],
            context: "enqueueing \(jobs.count) jobs with unique keys"
        )
        var results: [UniqueEnqueueResult] = []
        results.reserveCapacity(jobs.count)
        for row in rows {
            let id = try row.decode(Int64.self, at: 1)
            results.append(try row.decode(Bool.self, at: 2) ? .enqueued(jobID: id) : .duplicate(jobID: id))
        }
        return results
    }

    /// The queue, priority, run_at and max_attempts arrays of a batch, in that order; an array that holds
    /// only defaults is sent as NULL: less to encode, send and parse.
    private static func optionalColumns(_ jobs: [NewJob]) -> [(any PostgresBindable)?] {
        [
            jobs.contains { $0.queue != "default" } ? jobs.map(\.queue) : nil,
            jobs.contains { $0.priority != 0 } ? jobs.map(\.priority) : nil,
            jobs.contains { $0.runAt != nil } ? jobs.map(\.runAt) : nil,
            jobs.contains { $0.maxAttempts != nil } ? jobs.map(\.maxAttempts) : nil,
        ]
    }
}

/// What ``JobQueue/enqueueUnique(_:notify:on:)`` did with one job.
public enum UniqueEnqueueResult: Sendable, Hashable {
    /// The job was added with this id.
    case enqueued(jobID: Int64)
    /// The key was already held; this is the holder's id, and nothing was added.
    case duplicate(jobID: Int64)

    /// The id of the job that owns the key, added now or before.
    public var jobID: Int64 {
        switch self {
        case .enqueued(let id), .duplicate(let id): id
        }
    }
}
