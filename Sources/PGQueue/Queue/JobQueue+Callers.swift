extension JobQueue {
    /// Enqueues a job for a caller of the app's API (`user:<id>` or `service:<id>`) and records who asked,
    /// so only that caller, through this login role, reads it back with ``job(_:for:on:)``.
    ///
    /// The login role's rights apply as for ``enqueue(_:notify:on:)`` (`sluice.kind_rules`); the job goes to
    /// the `default` queue with its kind's attempts.
    /// - Returns: the new job's id.
    public func startJob(kind: String, payload: String, for caller: String, on connection: PostgresConnection)
        throws(PostgresError) -> Int64
    {
        try connection.query(
            "SELECT sluice.start_job_for($1, $2, $3::jsonb)", [caller, kind, payload],
            context: "starting a \(kind) job for \(caller)"
        ).single().decode(Int64.self, at: 0)
    }

    /// What ``startExclusiveJob(kind:payload:for:exclusiveWith:on:)`` did.
    public enum ExclusiveStart: Sendable, Equatable {
        /// A new job. Jobs of the exclusive kinds that were still waiting for the caller (queued, or retrying
        /// after a failure) were replaced: each ends as failed, superseded by this one.
        case started(Int64)
        /// Nothing started: the same request (kind and payload) is still pending as this job.
        case alreadyPending(Int64)
        /// Nothing started: another job of the exclusive kinds, of kind `kind`, is running now.
        case blocked(by: Int64, kind: String)
    }

    /// Starts a job for a caller as ``startJob(kind:payload:for:on:)`` does, one at a time among
    /// `exclusiveKinds` for the same caller and login role: changes to one thing that must reach the outside
    /// world in the order they were asked for, the last one staying.
    ///
    /// The same request again follows the pending job; while another runs, nothing starts; a job still
    /// waiting is replaced by the new one. Calls for one caller are serialized in PostgreSQL, so of two
    /// concurrent requests one sees the other's job.
    /// - Parameter exclusiveKinds: the kinds that take turns; must include `kind`.
    public func startExclusiveJob(
        kind: String, payload: String, for caller: String, exclusiveWith exclusiveKinds: [String],
        on connection: PostgresConnection
    ) throws(PostgresError) -> ExclusiveStart {
        let row = try connection.query(
            """
            SELECT job_id, started, pending_kind, same_request
            FROM sluice.start_exclusive_job_for($1, $2, $3::jsonb, $4::text[])
            """,
            [caller, kind, payload, exclusiveKinds], context: "starting a \(kind) job for \(caller)"
        ).single()
        let id = try row.decode(Int64.self, at: 0)
        if try row.decode(Bool.self, at: 1) { return .started(id) }
        if try row.decode(Bool.self, at: 3) { return .alreadyPending(id) }
        return .blocked(by: id, kind: try row.decode(String.self, at: 2))
    }

    /// A job started with ``startJob(kind:payload:for:on:)`` as JSON: `{id, kind, state, attempt?, result?,
    /// error?}`, `state` one of queued, retrying, running, succeeded, failed.
    /// - Returns: nil for a job another caller or role started, or one whose result has been pruned.
    public func job(_ id: Int64, for caller: String, on connection: PostgresConnection) throws(PostgresError)
        -> String?
    {
        try connection.query(
            "SELECT sluice.job_for($1, $2)::text", [id, caller], context: "reading job \(id) for \(caller)"
        ).single().decode(String?.self, at: 0)
    }
}
