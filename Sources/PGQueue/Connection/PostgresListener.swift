import Dispatch
import Foundation
public import Logging

/// Keeps one connection LISTENing on some channels and reports what arrives, woken by the connection's
/// socket through a `DispatchSource` (no polling loop).
///
/// When the connection breaks (server restart, `pg_terminate_backend`), the listener reconnects with a
/// growing delay, LISTENs again and reports ``Event/connected``: notifications sent while it was away are
/// lost, so a consumer treats `connected` as "look for work now".
public final class PostgresListener: @unchecked Sendable {
    // Safety: `connection`, `source`, `isStopped` and `retryDelay` are read and written only on `queue`;
    // the other stored properties are immutable.

    /// What the listener reports.
    public enum Event: Sendable {
        /// The listener is (again) connected and listening; anything sent before may have been missed.
        case connected
        /// A notification on one of the channels.
        case notification(PostgresNotification)
    }

    private let connectionString: String?
    private let channels: [String]
    private let logger: Logger
    private let handler: @Sendable (Event) -> Void
    private let queue = DispatchQueue(label: "sluice.listener")
    private var connection: PostgresConnection?
    private var source: (any DispatchSourceRead)?
    private var isStopped = false
    private var retryDelay = PostgresListener.firstRetryDelay

    private static let firstRetryDelay = 0.05
    private static let longestRetryDelay = 5.0

    /// - Parameters:
    ///   - connectionString: as for ``PostgresConnection``.
    ///   - channels: the channels to LISTEN on.
    ///   - handler: called on the listener's own queue for each event; keep it short.
    public init(
        connectionString: String?,
        channels: [String],
        logger: Logger,
        handler: @escaping @Sendable (Event) -> Void
    ) {
        self.connectionString = connectionString
        self.channels = channels
        self.logger = logger
        self.handler = handler
    }

    /// Connects and starts listening in the background; connection failures are retried, not thrown.
    public func start() {
        queue.async { self.connect() }
    }

    /// Starts listening and waits until the first connection is made or fails.
    /// - Throws: the first connection's error; the listener keeps retrying in the background regardless.
    public func startAndWait() throws(PostgresError) {
        let outcome: PostgresError? = queue.sync {
            guard connection == nil else { return nil }
            return connect()
        }
        if let outcome { throw outcome }
    }

    /// Stops listening and closes the connection. Events already queued may still be delivered.
    public func stop() {
        queue.sync {
            isStopped = true
            tearDown()
        }
    }

    deinit {
        source?.cancel()
    }

    @discardableResult
    private func connect() -> PostgresError? {
        guard !isStopped else { return nil }
        do throws(PostgresError) {
            let connection = try PostgresConnection(connectionString: connectionString, logger: logger)
            for channel in channels {
                try connection.listen(channel)
            }
            // The source reads a duplicate of libpq's socket so that cancelling it (which closes the
            // duplicate) and closing the connection (which closes libpq's) never race over one descriptor.
            let descriptor = dup(connection.socketDescriptor)
            guard descriptor >= 0 else {
                throw PostgresError(code: .connectionLost, message: "could not watch the socket", context: "listening")
            }
            let source = DispatchSource.makeReadSource(fileDescriptor: descriptor, queue: queue)
            source.setEventHandler { [weak self] in self?.readNotifications() }
            source.setCancelHandler { close(descriptor) }
            self.connection = connection
            self.source = source
            source.resume()
            retryDelay = Self.firstRetryDelay
            logger.debug("Listening for notifications", metadata: ["channels": "\(channels.joined(separator: ","))"])
            handler(.connected)
            return nil
        } catch {
            logger.warning(
                "Could not listen for notifications; retrying",
                metadata: ["error": "\(error)", "retry_in_s": "\(retryDelay)"]
            )
            scheduleReconnect()
            return error
        }
    }

    private func readNotifications() {
        guard let connection else { return }
        do {
            for notification in try connection.pollNotifications() {
                handler(.notification(notification))
            }
        } catch {
            logger.warning("Notification connection lost; reconnecting", metadata: ["error": "\(error)"])
            tearDown()
            scheduleReconnect()
        }
    }

    private func tearDown() {
        source?.cancel()
        source = nil
        connection?.close()
        connection = nil
    }

    private func scheduleReconnect() {
        guard !isStopped else { return }
        let delay = retryDelay
        retryDelay = min(retryDelay * 2, Self.longestRetryDelay)
        queue.asyncAfter(deadline: .now() + delay) { [weak self] in
            guard let self, self.connection == nil else { return }
            self.connect()
        }
    }
}
