import Jobs
import Logging
import PGQueue

/// Decides whether the fetcher may claim, from the schema the database holds: a worker facing a schema
/// it cannot use (older than its build, or newer and no longer serving it) claims nothing, and says so
/// once, until the schema changes.
///
/// The fetcher looks again at every reconnect and every `interval`, so a rolling deploy's `sluice migrate`
/// is noticed within seconds. Pure state: the fetcher does the reading.
struct SchemaGate {
    /// The schema version this worker was built for.
    let build: Int
    /// How often to look at the database's version while connected.
    let interval: Duration
    private(set) var compatibility: SchemaCompatibility?
    private var checkedAt: ContinuousClock.Instant?

    init(build: Int = SluiceSchema.version, interval: Duration = .seconds(5)) {
        self.build = build
        self.interval = interval
    }

    /// Whether the fetcher should read the schema version now.
    func isDue(at now: ContinuousClock.Instant, reconnected: Bool) -> Bool {
        guard !reconnected, let checkedAt else { return true }
        return now - checkedAt >= interval
    }

    /// Whether claiming is allowed by the last reading.
    var allowsClaiming: Bool { compatibility?.isUsable ?? false }

    /// A log line the fetcher writes when the verdict changes.
    struct Notice {
        var level: Logger.Level
        var message: Logger.Message
        var metadata: Logger.Metadata
    }

    /// Records a reading (nil: no schema at all) and returns what to log, if the verdict changed.
    mutating func record(_ installed: InstalledSchema?, at now: ContinuousClock.Instant) -> Notice? {
        checkedAt = now
        let verdict = installed?.compatibility(withBuild: build) ?? .upgradeDue(installed: 0, build: build)
        defer { compatibility = verdict }
        guard verdict.isUsable != compatibility?.isUsable else { return nil }
        let metadata: Logger.Metadata = [
            "schema.installed": "\(installed.map { "\($0.version)" } ?? "none")",
            "schema.serves_from": "\(installed?.servesFrom.map { "\($0)" } ?? "-")",
            "schema.build": "\(build)", "reason": "\(verdict)",
        ]
        if verdict.isUsable {
            guard compatibility != nil else { return nil }
            return Notice(level: .info, message: "Schema serves this release again; claiming jobs", metadata: metadata)
        }
        return Notice(
            level: .error, message: "Schema does not serve this release; claiming nothing", metadata: metadata)
    }
}
