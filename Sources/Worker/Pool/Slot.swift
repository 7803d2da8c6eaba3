import Dispatch
import Logging
import Metrics
import PGQueue

/// One place where blocking database work runs: a serial queue and the connection used on it (a pool's
/// handlers, the API's requests).
///
/// The connection is opened on first use (handlers that never touch the database never open one) and is
/// used only on the slot's own queue, as libpq requires.
final class Slot: @unchecked Sendable {
    // Safety: `connection` and `durationTimers` are read and written only on `queue`, where every handler
    // of this slot runs.
    let index: Int
    let queue: DispatchQueue
    private let connectionString: String?
    private let logger: Logger
    private var connection: PostgresConnection?
    private var durationTimers: [String: Metrics.Timer] = [:]

    /// - Parameter label: names the slot's queue (`<label>.<index>`), for stack traces.
    init(index: Int, connectionString: String?, logger: Logger, label: String = "sluice.slot") {
        self.index = index
        self.queue = DispatchQueue(label: "\(label).\(index)")
        self.connectionString = connectionString
        self.logger = logger
    }

    /// The slot's connection, opened on first use. Call only on `queue`.
    func openConnection() throws(PostgresError) -> PostgresConnection {
        dispatchPrecondition(condition: .onQueue(queue))
        if let connection { return connection }
        let opened = try PostgresConnection(connectionString: connectionString, logger: logger)
        connection = opened
        return opened
    }

    /// Records a handler's duration through a timer cached on this slot, so the hot path takes no lock.
    func recordDuration(kind: String, nanoseconds: Int64, metrics: SluiceMetrics) {
        if let timer = durationTimers[kind] {
            timer.recordNanoseconds(nanoseconds)
            return
        }
        let timer = metrics.durationTimer(kind: kind)
        durationTimers[kind] = timer
        timer.recordNanoseconds(nanoseconds)
    }
}
