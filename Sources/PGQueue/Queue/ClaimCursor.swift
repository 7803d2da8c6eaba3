/// A place in a queue's claim order (priority, run_at, id), with run_at in whole microseconds as the
/// database keeps it, so a position read back from a claim compares exactly.
public struct ClaimPosition: Sendable, Hashable, Comparable {
    public var priority: Int
    public var runAtMicroseconds: Int64
    public var id: Int64

    public init(priority: Int, runAtMicroseconds: Int64, id: Int64) {
        self.priority = priority
        self.runAtMicroseconds = runAtMicroseconds
        self.id = id
    }

    public static func < (lhs: ClaimPosition, rhs: ClaimPosition) -> Bool {
        (lhs.priority, lhs.runAtMicroseconds, lhs.id) < (rhs.priority, rhs.runAtMicroseconds, rhs.id)
    }
}

/// Where a worker's next claim from one queue starts, so that a claim does not walk the queue's dead
/// prefix again and again.
///
/// Completed jobs leave dead entries at the head of the claim index. Vacuum removes them and claims mark
/// them dead as they pass, unless a snapshot older than them is open (`pg_dump`, a long report, a forgotten
/// psql session): then every claim from the head walks all of them, and the queue slows to a fraction of
/// its rate. So a claim starts just past the last job this worker claimed (a lower bound on what is left
/// of the backlog it was draining), and a claim from the head runs as well:
/// - at most `rescanInterval` after the last one, so a job placed behind the bound (a higher priority, an
///   earlier `run_at`) waits at most that long;
/// - right after a claim past the bound found fewer jobs than it wanted, since that range may have run dry.
///
/// Retries and newly added jobs land past the bound (their `run_at` is later), so they need no rescan.
public struct ClaimCursor: Sendable {
    public let rescanInterval: Duration
    /// The furthest position claimed since the last claim from the head.
    public private(set) var bound: ClaimPosition?
    private var nextHeadScan: ContinuousClock.Instant?

    public init(rescanInterval: Duration = .seconds(1)) {
        self.rescanInterval = rescanInterval
    }

    /// Where the next claim starts: past `bound`, or the head of the queue (nil).
    public func start(now: ContinuousClock.Instant) -> ClaimPosition? {
        guard let bound, let next = nextHeadScan, now < next else { return nil }
        return bound
    }

    /// Notes a claim that started at `start`, wanted `wanted` jobs and got `claimed`, the last at `last`.
    public mutating func record(
        start: ClaimPosition?, wanted: Int, claimed: Int, last: ClaimPosition?, now: ContinuousClock.Instant
    ) {
        if start == nil {
            nextHeadScan = now + rescanInterval
            bound = last
        } else if let last {
            bound = max(bound ?? last, last)
        }
        if start != nil, claimed < wanted { nextHeadScan = now }
    }
}
