/// What a recorded failure did to its job.
public struct FailureOutcome: Sendable, Hashable {
    public enum Result: String, Sendable {
        /// Back in the queue, to run after its backoff.
        case retried
        /// Moved to `sluice.dead_letters`.
        case dead
    }

    public var id: Int64
    public var result: Result

    public init(id: Int64, result: Result) {
        self.id = id
        self.result = result
    }
}
