import Foundation
import Logging
import PGQueue
import Synchronization
import TestKit

/// Listens on `sluice_jobs` and records what arrives, for tests of wake-ups.
final class NotificationRecorder: Sendable {
    private let received: Box<[PostgresNotification]>
    private let connects: Box<Int>
    private let listener: PostgresListener

    init(url: String, channel: String = JobQueue.notificationChannel) throws {
        let received = Box<[PostgresNotification]>([])
        let connects = Box<Int>(0)
        self.received = received
        self.connects = connects
        listener = PostgresListener(connectionString: url, channels: [channel], logger: Logger(label: "test")) {
            event in
            switch event {
            case .connected: connects.value.withLock { $0 += 1 }
            case .notification(let notification): received.value.withLock { $0.append(notification) }
            }
        }
        try listener.startAndWait()
    }

    deinit { listener.stop() }

    var notifications: [PostgresNotification] { received.value.withLock { $0 } }
    var connectCount: Int { connects.value.withLock { $0 } }
}
