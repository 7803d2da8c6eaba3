import Logging
import PGQueue
import Synchronization

/// The app API's connections: a few slots, each a serial queue with a connection of its own (libpq blocks;
/// the HTTP server's threads must not), handed out in turn. A connection that broke reconnects on its next
/// call.
final class APIDatabase: Sendable {
    private let slots: [Slot]
    private let next = Atomic<Int>(0)

    init(connectionString: String?, connections: Int, logger: Logger) {
        slots = (0..<max(1, connections)).map { index in
            Slot(index: index, connectionString: connectionString, logger: logger, label: "sluice.api.db")
        }
    }

    /// Runs `body` with a connection, off Swift concurrency's threads.
    func run<Result: Sendable>(_ body: @escaping @Sendable (PostgresConnection) throws -> Result) async throws
        -> Result
    {
        let slot = slots[next.add(1, ordering: .relaxed).oldValue % slots.count]
        return try await withCheckedThrowingContinuation { continuation in
            slot.queue.async {
                continuation.resume(with: Swift.Result { try body(try slot.openConnection()) })
            }
        }
    }
}
