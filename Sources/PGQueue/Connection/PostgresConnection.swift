internal import CLibPQ
internal import Foundation
public import Logging

/// One connection to PostgreSQL over libpq: parameterised and prepared statements, transactions and
/// LISTEN, with reconnection after the connection breaks.
///
/// A connection is used by one thread at a time (libpq's rule), so it is not `Sendable`: make it on
/// the thread or serial queue that owns it and hand only decoded rows to others. Every call blocks
/// that thread until the server answers; never call it from an `async` function.
///
/// When the connection breaks, the failing call throws ``PostgresError`` with code `.connectionLost`
/// (its outcome is unknown to the caller) and the next call reconnects before it runs.
public final class PostgresConnection {
    private var handle: OpaquePointer?
    private let connectionString: String?
    /// Settings applied again on every reconnect (`set_config`), after the ones every connection gets.
    private let sessionSettings: [(name: String, value: String)]
    /// Each prepared statement's parameter types (OIDs), as the server inferred them.
    private var preparedTypes: [String: [UInt32]] = [:]
    private var noticeSink: NoticeSink
    /// The logger for notices and reconnects; statements themselves are not logged.
    public var logger: Logger {
        get { noticeSink.logger }
        set { noticeSink.logger = newValue }
    }

    /// Opens a connection.
    ///
    /// - Parameters:
    ///   - connectionString: a libpq URI (`postgresql://user@host:5432/db`) or key=value conninfo; `nil`
    ///     or empty uses libpq's `PG*` environment variables and defaults.
    ///   - logger: receives server notices at debug level and reconnects at info level.
    ///   - sessionSettings: server settings for this session, kept across reconnects; for example
    ///     ``JobQueue/sessionSettings`` on a connection that runs only queue statements.
    /// - Throws: `PostgresError` with code `.connectionFailed` when the server cannot be reached, or
    ///   `.serverError` when a setting is refused.
    public init(
        connectionString: String?, logger: Logger = Logger(label: "sluice.postgres"),
        sessionSettings: [(name: String, value: String)] = []
    ) throws(PostgresError) {
        self.connectionString = connectionString
        self.sessionSettings = sessionSettings
        self.noticeSink = NoticeSink(logger: logger)
        try connect(context: "connecting")
    }

    deinit {
        if let handle { PQfinish(handle) }
    }

    /// Closes the connection; a later call reconnects.
    public func close() {
        if let handle { PQfinish(handle) }
        handle = nil
        preparedTypes.removeAll()
    }

    /// The server process serving this connection (`pg_backend_pid()`), or nil when not connected.
    public var serverProcessID: Int32? {
        guard let handle, PQstatus(handle) == CONNECTION_OK else { return nil }
        return PQbackendPID(handle)
    }

    /// The idle time before the first TCP keepalive probe on this connection's socket, in seconds; nil for
    /// a Unix socket or when not connected.
    var keepaliveIdleSeconds: Int? {
        guard let handle, PQstatus(handle) == CONNECTION_OK else { return nil }
        let socket = PQsocket(handle)
        var enabled: Int32 = 0
        var idle: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        guard getsockopt(socket, SOL_SOCKET, SO_KEEPALIVE, &enabled, &length) == 0, enabled != 0 else { return nil }
        length = socklen_t(MemoryLayout<Int32>.size)
        guard getsockopt(socket, Int32(IPPROTO_TCP), TCP_KEEPIDLE, &idle, &length) == 0 else { return nil }
        return Int(idle)
    }

    /// Whether the connection runs over TCP (keepalives apply) rather than a Unix socket.
    var usesTCP: Bool {
        guard let handle, let host = PQhost(handle) else { return false }
        let name = String(cString: host)
        return !name.isEmpty && !name.hasPrefix("/") && !name.hasPrefix("@")
    }

    /// True when the connection is open and healthy as far as libpq knows.
    public var isConnected: Bool {
        guard let handle else { return false }
        return PQstatus(handle) == CONNECTION_OK
    }

    /// True inside a transaction block (also a failed one waiting for ROLLBACK).
    public var isInTransaction: Bool {
        guard let handle else { return false }
        let status = PQtransactionStatus(handle)
        return status == PQTRANS_INTRANS || status == PQTRANS_INERROR
    }

    // MARK: Statements

    /// Runs one statement with parameters sent apart from the SQL text.
    ///
    /// - Parameters:
    ///   - sql: one statement with `$1`, `$2`, … placeholders.
    ///   - bindings: the parameters; `nil` is SQL NULL.
    ///   - context: what the caller is doing, for error messages ("enqueueing a job").
    /// - Returns: the rows, already copied out of libpq.
    @discardableResult
    public func query(
        _ sql: String,
        _ bindings: [(any PostgresBindable)?] = [],
        context: String
    ) throws(PostgresError) -> PostgresRows {
        let handle = try connected(context: context)
        return try withParameters(bindings, types: []) { count, values, lengths, formats throws(PostgresError) in
            try consume(PQexecParams(handle, sql, count, nil, values, lengths, formats, 0), context: context)
        }
    }

    /// Runs a prepared statement, preparing it on this connection first if needed.
    @discardableResult
    public func execute(
        _ statement: PreparedStatement,
        _ bindings: [(any PostgresBindable)?] = [],
        context: String
    ) throws(PostgresError) -> PostgresRows {
        let handle = try connected(context: context)
        let types: [UInt32]
        if let known = preparedTypes[statement.name] {
            types = known
        } else {
            _ = try consume(PQprepare(handle, statement.name, statement.sql, 0, nil), context: context)
            do {
                types = try parameterTypes(of: statement.name, on: handle, context: context)
            } catch {
                // Prepared but not described: drop it, or every later call would fail to prepare it again.
                try? run(script: "DEALLOCATE \(try quoteIdentifier(statement.name))", context: context)
                throw error
            }
            preparedTypes[statement.name] = types
        }
        return try withParameters(bindings, types: types) { count, values, lengths, formats throws(PostgresError) in
            try consume(PQexecPrepared(handle, statement.name, count, values, lengths, formats, 0), context: context)
        }
    }

    /// Runs a script of one or more statements with no parameters (a schema file, `SET` commands).
    public func run(script: String, context: String) throws(PostgresError) {
        let handle = try connected(context: context)
        _ = try consume(PQexec(handle, script), context: context)
    }

    /// Runs `body` in a transaction: commits when it returns, rolls back when it throws.
    ///
    /// The body receives this connection; its statements are part of the transaction.
    /// - Throws: the body's error after rolling back, or `PostgresError` from BEGIN or COMMIT.
    @discardableResult
    public func transaction<Result>(
        context: String,
        _ body: (PostgresConnection) throws -> Result
    ) throws -> Result {
        do {
            try run(script: "BEGIN", context: context)
        } catch  where error.code == .connectionLost {
            // Nothing ran yet, so beginning again on a fresh connection is safe: an idle connection that
            // the server closed (restart, idle timeout, pg_terminate_backend) should not fail the work.
            try run(script: "BEGIN", context: context)
        }
        let result: Result
        do {
            result = try body(self)
        } catch {
            if isConnected {
                try? run(script: "ROLLBACK", context: context)
            }
            throw error
        }
        try run(script: "COMMIT", context: context)
        return result
    }

    // MARK: LISTEN/NOTIFY

    /// Subscribes this connection to a notification channel.
    public func listen(_ channel: String) throws(PostgresError) {
        try run(script: "LISTEN \(try quoteIdentifier(channel))", context: "listening on \(channel)")
    }

    /// Reads what the server has sent without blocking and returns the notifications received so far.
    ///
    /// - Throws: `.connectionLost` when the socket reports the connection closed.
    public func pollNotifications() throws(PostgresError) -> [PostgresNotification] {
        guard let handle, PQstatus(handle) == CONNECTION_OK else {
            throw PostgresError(code: .connectionLost, message: "not connected", context: "reading notifications")
        }
        if PQconsumeInput(handle) == 0 {
            let message = errorMessage(handle)
            throw PostgresError(code: .connectionLost, message: message, context: "reading notifications")
        }
        var received: [PostgresNotification] = []
        while let notify = PQnotifies(handle) {
            let event = notify.pointee
            received.append(
                PostgresNotification(
                    channel: String(cString: event.relname),
                    payload: String(cString: event.extra),
                    serverProcessID: event.be_pid
                )
            )
            PQfreemem(notify)
        }
        return received
    }

    /// The socket libpq reads, for a `DispatchSource`; -1 when not connected. Changes after a reconnect.
    var socketDescriptor: Int32 {
        guard let handle else { return -1 }
        return PQsocket(handle)
    }

    /// Quotes a name for use as an SQL identifier (channel, table).
    public func quoteIdentifier(_ name: String) throws(PostgresError) -> String {
        let handle = try connected(context: "quoting an identifier")
        guard let quoted = PQescapeIdentifier(handle, name, name.utf8.count) else {
            throw PostgresError(
                code: .protocolViolation, message: errorMessage(handle), context: "quoting an identifier")
        }
        defer { PQfreemem(quoted) }
        return String(cString: quoted)
    }

    // MARK: Connection management

    private func connect(context: String) throws(PostgresError) {
        if let handle { PQfinish(handle) }
        handle = nil
        preparedTypes.removeAll()
        let newHandle = Self.open(connectionString)
        guard let newHandle else {
            throw PostgresError(
                code: .connectionFailed, message: "libpq could not allocate a connection", context: context)
        }
        guard PQstatus(newHandle) == CONNECTION_OK else {
            let message = errorMessage(newHandle)
            PQfinish(newHandle)
            throw PostgresError(code: .connectionFailed, message: message, context: context)
        }
        handle = newHandle
        PQsetNoticeProcessor(newHandle, forwardNotice, Unmanaged.passUnretained(noticeSink).toOpaque())
        // Timestamps are exchanged as ISO text in UTC whatever the server's or role's defaults are.
        do {
            try run(
                script: "SET DateStyle = 'ISO'; SET TimeZone = 'UTC'; SET plan_cache_mode = force_generic_plan",
                context: context)
            for setting in sessionSettings {
                try query("SELECT set_config($1, $2, false)", [setting.name, setting.value], context: context)
            }
        } catch {
            close()
            throw error
        }
    }

    private static func open(_ connectionString: String?) -> OpaquePointer? {
        // expand_dbname lets "dbname" carry a whole URI or conninfo; the fallback name shows in
        // pg_stat_activity unless the caller chose an application_name.
        //
        // TCP keepalives probe an idle connection after 30 s and give up after three more 10 s probes, so a
        // connection left half-open by a failover (a LISTEN connection above all, which only ever reads) is
        // found dead in about a minute instead of the kernel's two hours. They come before "dbname", so
        // values in the caller's connection string win.
        var keywords = [
            "fallback_application_name", "keepalives", "keepalives_idle", "keepalives_interval", "keepalives_count",
        ]
        var values = ["sluice", "1", "30", "10", "3"]
        if let connectionString, !connectionString.isEmpty {
            keywords.append("dbname")
            values.append(connectionString)
        }
        let keywordPointers = keywords.map { strdup($0) } + [nil]
        let valuePointers = values.map { strdup($0) } + [nil]
        defer {
            keywordPointers.forEach { free($0) }
            valuePointers.forEach { free($0) }
        }
        return keywordPointers.map { UnsafePointer($0) }.withUnsafeBufferPointer { keywordBuffer in
            valuePointers.map { UnsafePointer($0) }.withUnsafeBufferPointer { valueBuffer in
                PQconnectdbParams(keywordBuffer.baseAddress, valueBuffer.baseAddress, 1)
            }
        }
    }

    /// The live handle, reconnecting first when the last call found the connection broken.
    private func connected(context: String) throws(PostgresError) -> OpaquePointer {
        if let handle, PQstatus(handle) == CONNECTION_OK { return handle }
        let wasOpen = handle != nil
        try connect(context: context)
        if wasOpen { logger.info("Reconnected to PostgreSQL", metadata: ["context": "\(context)"]) }
        return handle!
    }

    /// The parameter types the server gave a statement just prepared.
    private func parameterTypes(of name: String, on handle: OpaquePointer, context: String) throws(PostgresError)
        -> [UInt32]
    {
        guard let result = PQdescribePrepared(handle, name) else { throw failure(result: nil, context: context) }
        defer { PQclear(result) }
        guard PQresultStatus(result) == PGRES_COMMAND_OK else { throw failure(result: result, context: context) }
        return (0..<PQnparams(result)).map { UInt32(PQparamtype(result, $0)) }
    }

    /// Calls `body` with libpq's parameter arrays: values, lengths and formats.
    ///
    /// A value goes in binary when its type allows it (``PostgresBindable/appendPostgresBinary(as:to:)``),
    /// which spares escaping a batch's payloads into an array literal and the server parsing it back;
    /// otherwise in text, NUL-terminated. Every value sits in one buffer: one allocation however many
    /// parameters.
    private func withParameters<Result>(
        _ bindings: [(any PostgresBindable)?],
        types: [UInt32],
        _ body: (Int32, UnsafePointer<UnsafePointer<CChar>?>?, UnsafePointer<Int32>?, UnsafePointer<Int32>?)
            throws(PostgresError) -> Result
    ) throws(PostgresError) -> Result {
        var buffer: [UInt8] = []
        var offsets: [Int?] = []
        var lengths: [Int32] = []
        var formats: [Int32] = []
        offsets.reserveCapacity(bindings.count)
        lengths.reserveCapacity(bindings.count)
        formats.reserveCapacity(bindings.count)
        for (index, binding) in bindings.enumerated() {
            guard let binding, !((binding as? any OptionalProtocol)?.isNone ?? false) else {
                offsets.append(nil)
                lengths.append(0)
                formats.append(0)
                continue
            }
            let start = buffer.count
            offsets.append(start)
            if index < types.count, binding.appendPostgresBinary(as: types[index], to: &buffer) {
                lengths.append(Int32(buffer.count - start))
                formats.append(1)
            } else {
                binding.appendPostgresText(to: &buffer)
                buffer.append(0)
                lengths.append(0)
                formats.append(0)
            }
        }
        return try buffer.withUnsafeBufferPointer { bytes throws(PostgresError) in
            let base = UnsafeRawPointer(bytes.baseAddress)
            let pointers: [UnsafePointer<CChar>?] = offsets.map { offset in
                offset.flatMap { base?.advanced(by: $0).assumingMemoryBound(to: CChar.self) }
            }
            return try pointers.withUnsafeBufferPointer { values throws(PostgresError) in
                try lengths.withUnsafeBufferPointer { lengths throws(PostgresError) in
                    try formats.withUnsafeBufferPointer { formats throws(PostgresError) in
                        try body(Int32(values.count), values.baseAddress, lengths.baseAddress, formats.baseAddress)
                    }
                }
            }
        }
    }

    /// Turns a libpq result into rows or an error, and frees it.
    private func consume(_ result: OpaquePointer?, context: String) throws(PostgresError) -> PostgresRows {
        guard let result else {
            throw failure(result: nil, context: context)
        }
        defer { PQclear(result) }
        switch PQresultStatus(result) {
        case PGRES_TUPLES_OK, PGRES_COMMAND_OK, PGRES_EMPTY_QUERY:
            return Self.rows(from: result, context: context)
        default:
            throw failure(result: result, context: context)
        }
    }

    private static func rows(from result: OpaquePointer, context: String) -> PostgresRows {
        let rowCount = Int(PQntuples(result))
        let columnCount = Int(PQnfields(result))
        var columns: [String] = []
        columns.reserveCapacity(columnCount)
        for column in 0..<columnCount {
            columns.append(String(cString: PQfname(result, Int32(column))))
        }
        var values: [String?] = []
        values.reserveCapacity(rowCount * columnCount)
        for row in 0..<Int32(rowCount) {
            for column in 0..<Int32(columnCount) {
                if PQgetisnull(result, row, column) == 1 {
                    values.append(nil)
                } else {
                    values.append(String(cString: PQgetvalue(result, row, column)))
                }
            }
        }
        let affected = Int(String(cString: PQcmdTuples(result))) ?? 0
        return PostgresRows(columns: columns, values: values, affectedRows: affected, context: context)
    }

    private func failure(result: OpaquePointer?, context: String) -> PostgresError {
        func field(_ code: Int32) -> String? {
            guard let result, let value = PQresultErrorField(result, code) else { return nil }
            return String(cString: value)
        }
        let broken = handle.map { PQstatus($0) != CONNECTION_OK } ?? true
        let sqlState = field(sluice_diag_sqlstate)
        let message = field(sluice_diag_message_primary) ?? handle.map(errorMessage) ?? "no result"
        if broken || sqlState == nil && result == nil {
            // The outcome of the statement is unknown; drop the handle so the next call reconnects.
            if let handle { PQfinish(handle) }
            handle = nil
            preparedTypes.removeAll()
            return PostgresError(code: .connectionLost, sqlState: sqlState, message: message, context: context)
        }
        // A backend killed by an administrator or a server shutting down closes the connection too.
        if let sqlState, sqlState.hasPrefix("57P") || sqlState.hasPrefix("08") {
            close()
            return PostgresError(code: .connectionLost, sqlState: sqlState, message: message, context: context)
        }
        return PostgresError(
            code: .serverError,
            sqlState: sqlState,
            message: message,
            detail: field(sluice_diag_message_detail),
            hint: field(sluice_diag_message_hint),
            context: context
        )
    }

    private func errorMessage(_ handle: OpaquePointer) -> String {
        guard let text = PQerrorMessage(handle) else { return "unknown libpq error" }
        // libpq wraps its messages over several lines; logs want one line per event.
        return String(cString: text).split(whereSeparator: \.isNewline)
            .map { $0.trimmingCharacters(in: .whitespaces) }
            .joined(separator: " ")
    }
}

/// A notification delivered by `NOTIFY channel, 'payload'`.
public struct PostgresNotification: Sendable, Hashable {
    public var channel: String
    public var payload: String
    /// The server process that sent it.
    public var serverProcessID: Int32
}

/// Holds the logger that libpq's notice callback writes to; passed to C as an unretained pointer,
/// kept alive by the connection that owns it.
private final class NoticeSink {
    var logger: Logger
    init(logger: Logger) { self.logger = logger }
}

private func forwardNotice(_ context: UnsafeMutableRawPointer?, _ message: UnsafePointer<CChar>?) {
    guard let context, let message else { return }
    let sink = Unmanaged<NoticeSink>.fromOpaque(context).takeUnretainedValue()
    sink.logger.debug(
        "PostgreSQL notice", metadata: ["notice": "\(String(cString: message).trimmingTrailingWhitespace())"])
}

extension String {
    func trimmingTrailingWhitespace() -> String {
        var scalars = unicodeScalars[...]
        while let last = scalars.last, last == " " || last == "\n" || last == "\t" || last == "\r" {
            scalars.removeLast()
        }
        return String(scalars)
    }
}
