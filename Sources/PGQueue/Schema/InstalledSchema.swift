/// The schema a database holds, as `sluice.schema_version` records it, and whether a release can use it.
public struct InstalledSchema: Sendable, Equatable {
    /// The version of the schema.sql last applied.
    public var version: Int
    /// The oldest version whose release still works against it; nil means only `version` itself (databases
    /// stamped before version 3 did not record it).
    public var servesFrom: Int?

    public init(version: Int, servesFrom: Int?) {
        self.version = version
        self.servesFrom = servesFrom
    }

    /// What the database holds, or nil when the schema was never applied.
    public static func read(on connection: PostgresConnection) throws(PostgresError) -> InstalledSchema? {
        let context = "reading the schema version"
        let exists = try connection.query(
            """
            SELECT to_regclass('sluice.schema_version') IS NOT NULL,
                   EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass('sluice.schema_version')
                           AND attname = 'serves_from' AND NOT attisdropped)
            """, context: context
        ).single()
        guard try exists.decode(Bool.self, at: 0) else { return nil }
        let hasServesFrom = try exists.decode(Bool.self, at: 1)
        let rows = try connection.query(
            "SELECT version, \(hasServesFrom ? "serves_from" : "NULL::integer") FROM sluice.schema_version",
            context: context)
        guard let row = rows.first else { return nil }
        return InstalledSchema(version: try row.decode(Int.self, at: 0), servesFrom: try row.decode(Int?.self, at: 1))
    }

    /// Whether a release built for schema version `build` may claim and run jobs against this schema.
    public func compatibility(withBuild build: Int) -> SchemaCompatibility {
        if version == build { return .current }
        if version < build { return .upgradeDue(installed: version, build: build) }
        if let servesFrom, servesFrom <= build { return .served(installed: version, build: build) }
        return .releaseTooOld(installed: version, servesFrom: servesFrom ?? version, build: build)
    }
}

/// How a release relates to the schema in its database.
public enum SchemaCompatibility: Sendable, Equatable, CustomStringConvertible {
    /// The database holds exactly the release's version.
    case current
    /// The database is older: `sluice migrate` must run before this release works.
    case upgradeDue(installed: Int, build: Int)
    /// The database is newer but still serves this release (a rolling deploy in progress).
    case served(installed: Int, build: Int)
    /// The database is newer and no longer serves this release: it must be upgraded.
    case releaseTooOld(installed: Int, servesFrom: Int, build: Int)

    /// Whether the release may claim jobs.
    public var isUsable: Bool {
        switch self {
        case .current, .served: true
        case .upgradeDue, .releaseTooOld: false
        }
    }

    public var description: String {
        switch self {
        case .current: "schema is current"
        case .upgradeDue(let installed, let build):
            "database schema version \(installed) is older than this release's \(build): run 'sluice migrate'"
        case .served(let installed, let build):
            "database schema version \(installed) is newer than this release's \(build) and still serves it"
        case .releaseTooOld(let installed, let servesFrom, let build):
            "database schema version \(installed) serves releases from version \(servesFrom) on, and this release "
                + "is built for \(build): deploy the newer release"
        }
    }
}
