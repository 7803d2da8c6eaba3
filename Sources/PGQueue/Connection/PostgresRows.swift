/// The rows a statement returned, copied out of libpq so they can outlive the result and cross threads.
public struct PostgresRows: Sendable, RandomAccessCollection {
    /// Column names in result order.
    public let columns: [String]
    /// Values row-major; `nil` is SQL NULL.
    let values: [String?]
    /// How many rows a command touched (`UPDATE 3` gives 3), for statements that return no rows.
    public let affectedRows: Int
    /// The context of the statement, repeated in decoding errors.
    let context: String

    init(columns: [String], values: [String?], affectedRows: Int, context: String) {
        self.columns = columns
        self.values = values
        self.affectedRows = affectedRows
        self.context = context
    }

    public var startIndex: Int { 0 }
    public var endIndex: Int { columns.isEmpty ? 0 : values.count / columns.count }

    public subscript(position: Int) -> PostgresRow {
        PostgresRow(rows: self, offset: position * columns.count)
    }

    /// The one row of a statement that must return exactly one.
    public func single() throws(PostgresError) -> PostgresRow {
        guard count == 1 else {
            throw PostgresError(
                code: .protocolViolation,
                message: "expected exactly one row, got \(count)",
                context: context
            )
        }
        return self[0]
    }
}

/// One row of `PostgresRows`; decode its columns by position or by name.
public struct PostgresRow: Sendable {
    let rows: PostgresRows
    let offset: Int

    /// The raw text of a column, or nil for SQL NULL.
    public subscript(column: Int) -> String? {
        rows.values[offset + column]
    }

    /// Decodes a non-null column.
    /// - Throws: `PostgresError` with code `.decodingFailed` naming the column when it is NULL or malformed.
    public func decode<Value: PostgresDecodable>(
        _ type: Value.Type,
        at column: Int
    ) throws(PostgresError) -> Value {
        guard let value = try decode(Value?.self, at: column) else {
            throw decodingError(column: column, reason: "is NULL, expected \(Value.self)")
        }
        return value
    }

    /// Decodes a nullable column.
    public func decode<Value: PostgresDecodable>(
        _ type: Value?.Type,
        at column: Int
    ) throws(PostgresError) -> Value? {
        guard column < rows.columns.count else {
            throw decodingError(column: column, reason: "does not exist")
        }
        guard let text = rows.values[offset + column] else { return nil }
        guard let value = Value(postgresText: text) else {
            throw decodingError(column: column, reason: "is not a valid \(Value.self)")
        }
        return value
    }

    /// Decodes a non-null column by name.
    public func decode<Value: PostgresDecodable>(
        _ type: Value.Type,
        named name: String
    ) throws(PostgresError) -> Value {
        try decode(type, at: try index(of: name))
    }

    /// Decodes a nullable column by name.
    public func decode<Value: PostgresDecodable>(
        _ type: Value?.Type,
        named name: String
    ) throws(PostgresError) -> Value? {
        try decode(type, at: try index(of: name))
    }

    private func index(of name: String) throws(PostgresError) -> Int {
        guard let index = rows.columns.firstIndex(of: name) else {
            throw PostgresError(
                code: .decodingFailed,
                message: "no column named \(name)",
                context: rows.context
            )
        }
        return index
    }

    private func decodingError(column: Int, reason: String) -> PostgresError {
        let name = column < rows.columns.count ? rows.columns[column] : "#\(column)"
        return PostgresError(code: .decodingFailed, message: "column \(name) \(reason)", context: rows.context)
    }
}
