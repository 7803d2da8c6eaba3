public import Foundation

/// A Swift value that can be sent as a statement parameter, in PostgreSQL's text format.
///
/// Parameters are always sent separately from the SQL text (`$1`, `$2`, …), so no value is ever
/// spliced into a statement. Cast in SQL where the type is not obvious (`$1::jsonb`, `$2::bigint[]`).
public protocol PostgresBindable: Sendable {
    /// The value in PostgreSQL's text input format.
    var postgresText: String { get }

    /// Appends the value, as UTF-8, as an element of an array literal; the default quotes and escapes it.
    func appendArrayElement(to literal: inout [UInt8])

    /// Appends ``postgresText`` as UTF-8; arrays build their literal straight into the parameter buffer.
    func appendPostgresText(to buffer: inout [UInt8])

    /// Appends the value in PostgreSQL's binary format for the type `oid` and returns true, or returns
    /// false, having appended nothing, to be sent as text instead (the default).
    func appendPostgresBinary(as oid: UInt32, to buffer: inout [UInt8]) -> Bool
}

extension PostgresBindable {
    public func appendArrayElement(to literal: inout [UInt8]) {
        appendQuotedArrayElement(postgresText, to: &literal)
    }

    public func appendPostgresText(to buffer: inout [UInt8]) {
        buffer.append(contentsOf: postgresText.utf8)
    }

    public func appendPostgresBinary(as oid: UInt32, to buffer: inout [UInt8]) -> Bool {
        false
    }
}

/// The type OIDs (`pg_type.oid`, fixed for built-in types) that values are sent in binary for.
enum PostgresType {
    static let text: UInt32 = 25
    static let varchar: UInt32 = 1043
    static let jsonb: UInt32 = 3802
    static let textArray: UInt32 = 1009
    static let varcharArray: UInt32 = 1015
    static let jsonbArray: UInt32 = 3807

    /// The element type of an array type sent in binary.
    static func element(ofArray oid: UInt32) -> UInt32? {
        switch oid {
        case textArray: text
        case varcharArray: varchar
        case jsonbArray: jsonb
        default: nil
        }
    }

    /// Appends `value` as a big-endian 32-bit integer, the binary format's framing.
    static func append(_ value: Int32, to buffer: inout [UInt8]) {
        withUnsafeBytes(of: value.bigEndian) { buffer.append(contentsOf: $0) }
    }
}

/// Appends `text` quoted for an array literal, a backslash before each `"` and `\`.
///
/// Bytes, not characters, and whole runs between escapes at a time: array parameters carry whole job
/// payloads (a webhook's body is mostly short runs between its own quotes), and this was the largest
/// cost of a batch enqueue.
func appendQuotedArrayElement(_ text: String, to literal: inout [UInt8]) {
    let quote = UInt8(ascii: "\""), backslash = UInt8(ascii: "\\")
    literal.append(quote)
    var text = text
    text.withUTF8 { bytes in
        var runStart = 0
        for (index, byte) in bytes.enumerated() where byte == quote || byte == backslash {
            literal.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[runStart..<index]))
            literal.append(backslash)
            runStart = index
        }
        literal.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[runStart...]))
    }
    literal.append(quote)
}

/// Numbers and booleans never need quoting inside an array literal; skipping it keeps large id arrays cheap.
protocol UnquotedArrayElement: PostgresBindable {}

extension UnquotedArrayElement {
    public func appendArrayElement(to literal: inout [UInt8]) {
        literal.append(contentsOf: postgresText.utf8)
    }
}

extension Int: UnquotedArrayElement {}
extension Int64: UnquotedArrayElement {}
extension Int32: UnquotedArrayElement {}
extension Double: UnquotedArrayElement {}
extension Bool: UnquotedArrayElement {}

extension String: PostgresBindable {
    public var postgresText: String { self }

    /// text and varchar are their UTF-8 bytes; jsonb is a version byte (1) and the JSON text, which the
    /// server parses as it does text input.
    public func appendPostgresBinary(as oid: UInt32, to buffer: inout [UInt8]) -> Bool {
        switch oid {
        case PostgresType.text, PostgresType.varchar: break
        case PostgresType.jsonb: buffer.append(1)
        default: return false
        }
        buffer.append(contentsOf: utf8)
        return true
    }

}

extension Substring: PostgresBindable {
    public var postgresText: String { String(self) }
}

extension Int: PostgresBindable {
    public var postgresText: String { String(self) }
}

extension Int64: PostgresBindable {
    public var postgresText: String { String(self) }
}

extension Int32: PostgresBindable {
    public var postgresText: String { String(self) }
}

extension Bool: PostgresBindable {
    public var postgresText: String { self ? "t" : "f" }
}

extension Double: PostgresBindable {
    public var postgresText: String {
        if isNaN { return "NaN" }
        if isInfinite { return self < 0 ? "-Infinity" : "Infinity" }
        return String(self)
    }
}

extension Date: PostgresBindable {
    /// Sent as an ISO 8601 timestamp in UTC with microseconds, which `timestamptz` reads without loss.
    public var postgresText: String { PostgresTimestamp.format(self) }
}

extension Optional: PostgresBindable where Wrapped: PostgresBindable {
    /// Never called for `nil`: the connection sends SQL NULL for an absent value.
    public var postgresText: String { self?.postgresText ?? "" }

    public func appendArrayElement(to literal: inout [UInt8]) {
        if let self {
            self.appendArrayElement(to: &literal)
        } else {
            literal.append(contentsOf: "NULL".utf8)
        }
    }

    /// Never called for `nil`: arrays write a NULL element's length as -1, and a NULL parameter is sent apart.
    public func appendPostgresBinary(as oid: UInt32, to buffer: inout [UInt8]) -> Bool {
        self?.appendPostgresBinary(as: oid, to: &buffer) ?? false
    }
}

extension Array: PostgresBindable where Element: PostgresBindable {
    /// A one-dimensional array literal (`{"a","b",NULL}`); every element is quoted and escaped.
    public var postgresText: String {
        var literal: [UInt8] = []
        appendPostgresText(to: &literal)
        return String(decoding: literal, as: UTF8.self)
    }

    /// One-dimensional arrays of text, varchar and jsonb go in binary: each element's bytes as they are,
    /// with no quoting to add or for the server to take out again.
    public func appendPostgresBinary(as oid: UInt32, to buffer: inout [UInt8]) -> Bool {
        guard let elementType = PostgresType.element(ofArray: oid), count <= Int32.max else { return false }
        let start = buffer.count
        let mayHoldNull = Element.self is any OptionalProtocol.Type
        PostgresType.append(isEmpty ? 0 : 1, to: &buffer)  // dimensions
        let hasNullAt = buffer.count
        PostgresType.append(0, to: &buffer)  // has NULLs: set below
        PostgresType.append(Int32(bitPattern: elementType), to: &buffer)
        if !isEmpty {
            PostgresType.append(Int32(count), to: &buffer)
            PostgresType.append(1, to: &buffer)  // lower bound
        }
        for element in self {
            let lengthAt = buffer.count
            if mayHoldNull, (element as? any OptionalProtocol)?.isNone == true {
                PostgresType.append(-1, to: &buffer)
                buffer[hasNullAt + 3] = 1
                continue
            }
            PostgresType.append(0, to: &buffer)
            guard element.appendPostgresBinary(as: elementType, to: &buffer),
                buffer.count - lengthAt - 4 <= Int(Int32.max)
            else {
                buffer.removeSubrange(start...)
                return false
            }
            Swift.withUnsafeBytes(of: Int32(buffer.count - lengthAt - 4).bigEndian) { length in
                for offset in 0..<4 { buffer[lengthAt + offset] = length[offset] }
            }
        }
        return true
    }

    public func appendPostgresText(to buffer: inout [UInt8]) {
        buffer.append(UInt8(ascii: "{"))
        for (index, element) in enumerated() {
            if index > 0 { buffer.append(UInt8(ascii: ",")) }
            element.appendArrayElement(to: &buffer)
        }
        buffer.append(UInt8(ascii: "}"))
    }
}

/// Lets an array literal tell a `nil` element from an empty string.
protocol OptionalProtocol {
    var isNone: Bool { get }
}

extension Optional: OptionalProtocol {
    var isNone: Bool { self == nil }
}

/// Reads and writes `timestamptz` text in the ISO style with a UTC offset.
enum PostgresTimestamp {
    static func format(_ date: Date) -> String {
        let totalMicros = (date.timeIntervalSince1970 * 1_000_000).rounded()
        var seconds = time_t((totalMicros / 1_000_000).rounded(.down))
        let micros = Int(totalMicros - Double(seconds) * 1_000_000)
        var parts = tm()
        gmtime_r(&seconds, &parts)
        func pad(_ value: Int32, _ width: Int) -> String {
            let digits = String(value)
            return String(repeating: "0", count: max(0, width - digits.count)) + digits
        }
        let microsText = String(micros)
        let paddedMicros = String(repeating: "0", count: 6 - microsText.count) + microsText
        return "\(pad(parts.tm_year + 1900, 4))-\(pad(parts.tm_mon + 1, 2))-\(pad(parts.tm_mday, 2)) "
            + "\(pad(parts.tm_hour, 2)):\(pad(parts.tm_min, 2)):\(pad(parts.tm_sec, 2)).\(paddedMicros)+00"
    }

    /// Parses `YYYY-MM-DD HH:MM:SS[.ffffff]±HH[:MM]`, the output of `timestamptz` under `DateStyle=ISO`.
    static func parse(_ text: String) -> Date? {
        let bytes = Array(text.utf8)
        guard bytes.count >= 19 else { return nil }
        func number(_ range: Range<Int>) -> Int? {
            var value = 0
            for index in range {
                guard index < bytes.count, bytes[index] >= 48, bytes[index] <= 57 else { return nil }
                value = value * 10 + Int(bytes[index] - 48)
            }
            return value
        }
        guard let year = number(0..<4), let month = number(5..<7), let day = number(8..<10),
            let hour = number(11..<13), let minute = number(14..<16), let second = number(17..<19)
        else { return nil }
        var index = 19
        var fraction = 0.0
        if index < bytes.count, bytes[index] == UInt8(ascii: ".") {
            index += 1
            var scale = 0.1
            while index < bytes.count, bytes[index] >= 48, bytes[index] <= 57 {
                fraction += Double(bytes[index] - 48) * scale
                scale /= 10
                index += 1
            }
        }
        var offsetSeconds = 0
        if index < bytes.count, bytes[index] == UInt8(ascii: "+") || bytes[index] == UInt8(ascii: "-") {
            let sign = bytes[index] == UInt8(ascii: "-") ? -1 : 1
            guard let hours = number((index + 1)..<(index + 3)) else { return nil }
            var minutes = 0
            if index + 3 < bytes.count, bytes[index + 3] == UInt8(ascii: ":") {
                minutes = number((index + 4)..<(index + 6)) ?? 0
            }
            offsetSeconds = sign * (hours * 3600 + minutes * 60)
        }
        var parts = tm()
        parts.tm_year = Int32(year - 1900)
        parts.tm_mon = Int32(month - 1)
        parts.tm_mday = Int32(day)
        parts.tm_hour = Int32(hour)
        parts.tm_min = Int32(minute)
        parts.tm_sec = Int32(second)
        let epoch = timegm(&parts)
        return Date(timeIntervalSince1970: Double(epoch - offsetSeconds) + fraction)
    }
}
