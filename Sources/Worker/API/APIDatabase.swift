import Dispatch
import Logging
import PGQueue
import Synchronization

/// The app API's connections: a few, each on a serial queue of its own (libpq blocks; the HTTP server's
/// threads must not), handed out in turn. A connection that broke reconnects on its next call.
final class APIDatabase: Sendable {
    private let lanes: [Lane]
    private let next = Atomic<Int>(0)

    init(connectionString: String?, connections: Int, logger: Logger) {
        lanes = (0..<max(1, connections)).map { index in
            Lane(index: index, connectionString: connectionString, logger: logger)
        }
    }

    /// Runs `body` with a connection, off Swift concurrency's threads.
    func run<Result: Sendable>(_ body: @escaping @Sendable (PostgresConnection) throws -> Result) async throws
        -> Result
    {
        let lane = lanes[next.add(1, ordering: .relaxed).oldValue % lanes.count]
        return try await withCheckedThrowingContinuation { continuation in
            lane.queue.async {
                continuation.resume(with: Swift.Result { try body(try lane.connection()) })
            }
        }
    }

    private final class Lane: @unchecked Sendable {
        // Safety: `opened` is read and written only on `queue`.
        let queue: DispatchQueue
        private let connectionString: String?
        private let logger: Logger
        private var opened: PostgresConnection?

        init(index: Int, connectionString: String?, logger: Logger) {
            queue = DispatchQueue(label: "sluice.api.db.\(index)")
            self.connectionString = connectionString
            self.logger = logger
        }

        func connection() throws(PostgresError) -> PostgresConnection {
            dispatchPrecondition(condition: .onQueue(queue))
            if let opened { return opened }
            let connection = try PostgresConnection(connectionString: connectionString, logger: logger)
            opened = connection
            return connection
        }
    }
}
