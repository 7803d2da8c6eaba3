public import PGQueue

/// A database a test works on: a ``TestDatabase`` cloned on the shared server, or one on a cluster of the
/// test's own (for tests that restart the server or create roles).
public protocol DatabaseUnderTest: Sendable {
    var url: String { get }
}

extension DatabaseUnderTest {
    /// A new connection to this database.
    public func connect() throws -> PostgresConnection {
        try PostgresConnection(connectionString: url)
    }

    /// Runs a query on a new connection and returns the first column of the first row as an integer.
    public func count(_ sql: String, _ bindings: [(any PostgresBindable)?] = []) throws -> Int {
        try connect().query(sql, bindings, context: "counting").single().decode(Int.self, at: 0)
    }
}
