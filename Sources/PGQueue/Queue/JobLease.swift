/// What proves a worker still holds a job: its id, the attempt, and the claim's holder token.
///
/// Every completion, failure, release and heartbeat names the lease it acts for, and PostgreSQL applies it
/// only while `locked_by` still holds that claim's token: a worker whose lease was rescued and handed to
/// another cannot finish the job that the other now runs, and a worker that claims the same job again
/// (after a snooze or a timeout) cannot mistake an outcome of its earlier claim for the new one.
public struct JobLease: Sendable, Hashable {
    public var id: Int64
    public var attempt: Int
    /// The `locked_by` value the claim set: `host:pid:nonce/claim`, unique per claim statement.
    public var holder: String

    public init(id: Int64, attempt: Int, holder: String) {
        self.id = id
        self.attempt = attempt
        self.holder = holder
    }
}
