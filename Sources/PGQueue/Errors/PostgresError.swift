/// An error from the PostgreSQL layer: what went wrong, what the caller was doing, and what the server said.
///
/// `description` names the failure and the caller's context but never values from the query, so it is
/// safe for logs at any level; `debugDescription` adds the server's detail and hint.
public struct PostgresError: Error, Sendable, CustomStringConvertible, CustomDebugStringConvertible {
    /// The kind of failure. A struct over a private enum, so new codes can be added without breaking callers.
    public struct Code: Sendable, Hashable, CustomStringConvertible {
        private enum Base: String, Sendable {
            case connectionFailed
            case connectionLost
            case serverError
            case decodingFailed
            case protocolViolation
        }

        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// No connection could be opened: the server is down, the address is wrong or the credentials are refused.
        public static let connectionFailed = Code(.connectionFailed)
        /// An open connection broke during the operation; its outcome is unknown. The next call reconnects.
        public static let connectionLost = Code(.connectionLost)
        /// The server rejected the statement; `sqlState` says why.
        public static let serverError = Code(.serverError)
        /// A returned value could not be read as the type the caller asked for.
        public static let decodingFailed = Code(.decodingFailed)
        /// The server answered in a way this layer does not expect (for example no result at all).
        public static let protocolViolation = Code(.protocolViolation)

        public var description: String { base.rawValue }
    }

    /// The kind of failure.
    public var code: Code
    /// The five-character SQLSTATE the server sent, if any (for example `23505` for a unique violation).
    public var sqlState: String?
    /// The server's primary message, or libpq's message when the server was not reached.
    public var message: String
    /// The server's DETAIL field, which may contain values from the statement: only in `debugDescription`.
    public var detail: String?
    /// The server's HINT field.
    public var hint: String?
    /// What the caller was doing, in a few words ("claiming jobs", "applying the schema").
    public var context: String

    public init(
        code: Code,
        sqlState: String? = nil,
        message: String,
        detail: String? = nil,
        hint: String? = nil,
        context: String
    ) {
        self.code = code
        self.sqlState = sqlState
        self.message = message
        self.detail = detail
        self.hint = hint
        self.context = context
    }

    /// True when retrying the same work later may succeed: the connection failed or broke, the server is
    /// shutting down or out of resources, or the transaction lost a serialisation race.
    public var isTransient: Bool {
        if code == .connectionFailed || code == .connectionLost { return true }
        guard let sqlState else { return false }
        // 08: connection exception, 40: transaction rollback (serialisation, deadlock),
        // 53: insufficient resources, 57P0x: operator intervention / shutdown.
        return sqlState.hasPrefix("08") || sqlState.hasPrefix("40") || sqlState.hasPrefix("53")
            || sqlState.hasPrefix("57P")
    }

    /// True for SQLSTATE class 22 (data exception: a value of the wrong type or out of range): the input is
    /// wrong, and retrying the same input cannot help.
    public var isDataException: Bool {
        sqlState?.hasPrefix("22") == true
    }

    public var description: String {
        var text = "PostgreSQL \(code) while \(context)"
        if let sqlState { text += " (SQLSTATE \(sqlState))" }
        text += ": \(message)"
        if code == .connectionFailed {
            text += "; check DATABASE_URL and that the server is running"
        } else if code == .connectionLost {
            text += "; the next call reconnects"
        }
        return text
    }

    public var debugDescription: String {
        var text = description
        if let detail { text += "; detail: \(detail)" }
        if let hint { text += "; hint: \(hint)" }
        return text
    }
}
