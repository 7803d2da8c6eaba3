/// Maps a job's `kind` to the handler that runs it.
public struct JobRegistry: Sendable {
    private var handlers: [String: any JobHandler] = [:]

    public init(_ handlers: [any JobHandler] = []) {
        for handler in handlers { register(handler) }
    }

    /// Adds a handler; a later one for the same kind replaces the earlier.
    public mutating func register(_ handler: any JobHandler) {
        handlers[handler.kind] = handler
    }

    /// The handler for `kind`, or nil: the pool then fails the job permanently, naming the kind.
    public func handler(for kind: String) -> (any JobHandler)? {
        handlers[kind]
    }

    /// The kinds this registry runs, sorted.
    public var kinds: [String] { handlers.keys.sorted() }
}
