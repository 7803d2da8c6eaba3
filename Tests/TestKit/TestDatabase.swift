import Foundation
public import Logging
public import PGQueue
import Synchronization

/// A fresh database with the schema applied, made for one test and dropped when the value goes away.
///
/// Tests run in parallel, each on its own database, so no test sees another's jobs. Databases are
/// copied from a template that gets the schema once per test process, which makes one cost a few
/// milliseconds instead of a cluster's initdb. A test that stops the server or creates roles (which are
/// cluster-wide) needs a cluster of its own instead.
public final class TestDatabase: DatabaseUnderTest {
    public let name: String
    public let url: String

    /// - Parameter empty: true for a database without the schema (for upgrade and restore tests).
    public init(empty: Bool = false) throws {
        let template = empty ? "template0" : try Self.template.get()
        name = "sluice_test_\(UInt64.random(in: 0...UInt64.max))"
        let admin = try PostgresConnection(connectionString: Self.adminURL)
        try admin.run(script: "CREATE DATABASE \(name) TEMPLATE \(template)", context: "creating a test database")
        url = Self.url(forDatabase: name)
    }

    deinit {
        let admin = try? PostgresConnection(connectionString: Self.adminURL)
        try? admin?.run(script: "DROP DATABASE IF EXISTS \(name) WITH (FORCE)", context: "dropping a test database")
    }

    /// A new connection to this database that logs through `logger`.
    public func connect(logger: Logger) throws -> PostgresConnection {
        try PostgresConnection(connectionString: url, logger: logger)
    }

    /// The server that `make test` started (or the developer's own).
    public static let adminURL: String = {
        guard let url = ProcessInfo.processInfo.environment["DATABASE_URL"], !url.isEmpty else {
            fatalError("DATABASE_URL is not set: run the tests with 'make test', which starts a throwaway PostgreSQL")
        }
        return url
    }()

    /// Points the admin URL (a URI or a conninfo string) at another database.
    public static func url(forDatabase database: String) -> String {
        if adminURL.hasPrefix("postgres://") || adminURL.hasPrefix("postgresql://"),
            var components = URLComponents(string: adminURL)
        {
            components.path = "/\(database)"
            return components.string ?? adminURL
        }
        return "\(adminURL) dbname=\(database)"
    }

    /// The template database, made once per test process with the schema applied and the table the
    /// `sluice.test.mark` jobs write to.
    private static let template: Result<String, any Error> = Result {
        let name = "sluice_template_\(UInt64.random(in: 0...UInt64.max))"
        let admin = try PostgresConnection(connectionString: adminURL)
        try admin.run(script: "CREATE DATABASE \(name)", context: "creating the template database")
        let connection = try PostgresConnection(connectionString: url(forDatabase: name))
        try TestSchema.script.apply(on: connection)
        try connection.run(script: TestSchema.marksTable, context: "creating the marks table")
        connection.close()
        atexit {
            let admin = try? PostgresConnection(connectionString: TestDatabase.adminURL)
            try? admin?.run(
                script: "DROP DATABASE IF EXISTS \(TestDatabase.templateName) WITH (FORCE)",
                context: "dropping the template database")
        }
        templateNameStorage.withLock { $0 = name }
        return name
    }

    private static let templateNameStorage = Mutex<String>("")
    private static var templateName: String { templateNameStorage.withLock { $0 } }
}

extension TestSchema {
    /// The table `sluice.test.mark` jobs record their runs in (it is not part of the schema).
    public static let marksTable = """
        CREATE SCHEMA sluice_test;
        CREATE TABLE sluice_test.marks (
            job_id bigint NOT NULL, attempt integer NOT NULL, enqueued_at timestamptz, started_at timestamptz
        );
        """
}
