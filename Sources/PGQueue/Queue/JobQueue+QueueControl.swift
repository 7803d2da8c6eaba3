extension JobQueue {
    /// Removes a waiting job; false when there is no such waiting job (running jobs cannot be cancelled).
    @discardableResult
    public func cancel(jobID: Int64, on connection: PostgresConnection) throws(PostgresError) -> Bool {
        let rows = try connection.query("SELECT sluice.cancel($1)", [jobID], context: "cancelling job \(jobID)")
        return try rows.single().decode(Bool.self, at: 0)
    }

    /// Stops workers claiming from a queue; its jobs keep waiting.
    public func pause(queue: String, on connection: PostgresConnection) throws(PostgresError) {
        try connection.query("SELECT sluice.pause_queue($1)", [queue], context: "pausing queue \(queue)")
    }

    /// Lets workers claim from a paused queue again.
    public func resume(queue: String, on connection: PostgresConnection) throws(PostgresError) {
        try connection.query("SELECT sluice.resume_queue($1)", [queue], context: "resuming queue \(queue)")
    }
}
