/// A statement that a connection prepares once and then runs by name, skipping parse and plan work.
///
/// Declare hot statements as static constants; each connection prepares a statement the first time it
/// runs it and again after a reconnect, so callers never track preparation themselves.
public struct PreparedStatement: Sendable, Hashable {
    /// The server-side name; unique per statement text within a program.
    public let name: String
    /// The SQL text with `$1`, `$2`, … placeholders.
    public let sql: String

    public init(name: String, sql: String) {
        self.name = name
        self.sql = sql
    }
}
