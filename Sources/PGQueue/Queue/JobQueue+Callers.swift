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
