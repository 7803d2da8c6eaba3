extension JobQueue {
    /// The CTEs that move the rows of a `dead` CTE (shaped like `sluice.dead_letters`) to the dead letters
    /// and free their unique keys; failures and the rescuer both end jobs this way.
    static let buryCTEs = """
        buried AS (
            INSERT INTO sluice.dead_letters
                (id, queue, kind, payload, priority, attempt, max_attempts, errors, reason, unique_key, created_at,
                 enqueued_by)
            SELECT * FROM dead
        ), freed AS (
            DELETE FROM sluice.unique_keys u USING dead d WHERE u.key = d.unique_key AND u.job_id = d.id
        )
        """

    // One statement for a batch of failures: jobs with attempts left go back with their backoff, the
    // others move to the dead letters (freeing their unique key). Each failure is appended to `errors`.
    static let failStatement = PreparedStatement(
        name: "sluice_fail",
        sql: """
            WITH input AS (
                SELECT * FROM unnest($1::bigint[], $2::integer[], $3::text[], $4::text[], $5::text[], $6::double precision[])
                    AS f(id, attempt, holder, error_kind, message, retry_in)
            ), held AS (
                SELECT j.id, f.error_kind, f.message, f.retry_in,
                       (f.error_kind = 'permanent' OR j.attempt >= j.max_attempts) AS dies
                FROM sluice.jobs j
                JOIN input f ON j.id = f.id AND j.attempt = f.attempt
                WHERE j.locked_by = f.holder AND j.state = 'running'
                FOR UPDATE OF j
            ), dead AS (
                DELETE FROM sluice.jobs j USING held h
                WHERE j.id = h.id AND h.dies
                RETURNING j.id, j.queue, j.kind, j.payload, j.priority, j.attempt, j.max_attempts,
                          j.errors || jsonb_build_object('attempt', j.attempt, 'at', now(),
                                                         'error', h.message, 'kind', h.error_kind) AS errors,
                          CASE WHEN h.error_kind = 'permanent' THEN 'permanent_failure'
                               ELSE 'attempts_exhausted' END AS reason,
                          j.unique_key, j.created_at, j.enqueued_by
            ), \(buryCTEs), retried AS (
                UPDATE sluice.jobs j
                SET state = 'available', locked_by = NULL, locked_until = NULL,
                    run_at = now() + make_interval(secs => h.retry_in),
                    errors = j.errors || jsonb_build_object('attempt', j.attempt, 'at', now(),
                                                            'error', h.message, 'kind', h.error_kind)
                FROM held h
                WHERE j.id = h.id AND NOT h.dies
                RETURNING j.id
            )
            SELECT id, 'dead' FROM dead
            UNION ALL
            SELECT id, 'retried' FROM retried
            """
    )

    /// Records failed attempts in one statement: each job is retried after its `retryIn`, or moved to the
    /// dead letters when the failure is permanent or it was the last attempt.
    ///
    /// - Returns: what happened to each job; a failure whose lease this worker no longer holds is fenced
    ///   off and missing from the result.
    @discardableResult
    public func fail(_ failures: [JobFailure], on connection: PostgresConnection) throws(PostgresError)
        -> [FailureOutcome]
    {
        guard !failures.isEmpty else { return [] }
        let failures = failures.sorted { $0.lease.id < $1.lease.id }  // lock order: see lockOrder(_:)
        let rows = try connection.execute(
            Self.failStatement,
            [
                failures.map(\.lease.id),
                failures.map(\.lease.attempt),
                failures.map(\.lease.holder),
                failures.map(\.kind.rawValue),
                failures.map(\.message),
                failures.map { Self.clampedDelay($0.retryIn) },
            ],
            context: "recording \(failures.count) failed jobs"
        )
        return try rows.map { row throws(PostgresError) in
            let result = try row.decode(String.self, at: 1)
            return FailureOutcome(id: try row.decode(Int64.self, at: 0), result: result == "dead" ? .dead : .retried)
        }
    }
}
