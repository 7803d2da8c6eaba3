public import Foundation

/// A job kind that runs once per slot of a fixed interval, however many workers run.
///
/// Slots are aligned to the Unix epoch (a 15-minute schedule has slots at :00, :15, :30, :45), so every
/// worker computes the same slot, and the job is enqueued with the unique key
/// `periodic:<kind>:<slot start>`: the first worker to enqueue it wins, the others find the key taken. The
/// job runs at the slot's start; a slot missed while no worker ran is not made up.
public struct PeriodicSchedule: Sendable, Hashable, CustomStringConvertible {
    public var kind: String
    /// Seconds between slots.
    public var interval: Double
    public var queue: String
    public var payload: String

    public init(kind: String, interval: Double, queue: String = "default", payload: String = "{}") {
        self.kind = kind
        self.interval = interval
        self.queue = queue
        self.payload = payload
    }

    /// The start of the slot that `date` falls in.
    public func slot(containing date: Date) -> Date {
        Date(timeIntervalSince1970: (date.timeIntervalSince1970 / interval).rounded(.down) * interval)
    }

    /// The unique key of one slot's job.
    public func uniqueKey(slot: Date) -> String {
        "periodic:\(kind):\(Int(slot.timeIntervalSince1970))"
    }

    public var description: String { "\(kind)@\(interval)s" }
}

extension JobQueue {
    /// Enqueues `schedule`'s job for the slot starting at `slot`, unless some worker already did; returns
    /// whether this call added it.
    @discardableResult
    public func enqueue(_ schedule: PeriodicSchedule, slot: Date, on connection: PostgresConnection)
        throws(PostgresError) -> Bool
    {
        let job = NewJob(
            kind: schedule.kind, payload: schedule.payload, queue: schedule.queue, runAt: slot,
            uniqueKey: schedule.uniqueKey(slot: slot))
        guard case .enqueued = try enqueueUnique([job], on: connection).first else { return false }
        return true
    }
}
