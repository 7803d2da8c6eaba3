/// One pass over a webhook body that checks it is a single well-formed JSON object (RFC 8259) and reads
/// the string values of its top-level `id` and `type` keys.
///
/// The receiver needs only those two fields, but must still refuse a body that is not JSON, since the
/// handler will parse all of it later. `JSONDecoder` builds a map of the whole document to answer two
/// keys, which cost more than the signature check; this scanner allocates only the two strings it returns.
/// It is stricter than the RFC asks in two places that never occur in a genuine event: nesting deeper than
/// ``maxDepth``, a `\u` escape that is half of a surrogate pair, and a top-level key that names `id` or
/// `type` twice or through escapes (so no other reader can see a different field) are all refused.
struct EnvelopeScanner {
    /// Containers nested deeper than this are refused (Foundation's decoder stops at 512 as well).
    static let maxDepth = 512

    /// A top-level field's value: absent, a string (unescaped), or another JSON value.
    enum Field: Equatable {
        case absent
        case string(String)
        case notString
    }

    /// What a scan found; nil from ``scan(_:)`` means the body is not one JSON object.
    struct Fields: Equatable {
        var id: Field = .absent
        var type: Field = .absent
    }

    /// Why the bytes are not JSON; internal to the scan.
    private struct Invalid: Error {}

    private let bytes: UnsafeBufferPointer<UInt8>
    private var index = 0

    private init(_ bytes: UnsafeBufferPointer<UInt8>) {
        self.bytes = bytes
    }

    /// The top-level `id` and `type` of `body`, or nil when `body` is not exactly one JSON object (surrounding
    /// whitespace allowed), or names `id` or `type` twice.
    static func scan(_ body: [UInt8]) -> Fields? {
        body.withUnsafeBufferPointer { buffer in
            var scanner = EnvelopeScanner(buffer)
            return try? scanner.document()
        }
    }

    private mutating func document() throws(Invalid) -> Fields {
        skipWhitespace()
        guard peek() == UInt8(ascii: "{") else { throw Invalid() }
        let fields = try topLevelObject()
        skipWhitespace()
        guard index == bytes.count else { throw Invalid() }
        return fields
    }

    private mutating func topLevelObject() throws(Invalid) -> Fields {
        var fields = Fields()
        try members { scanner, key throws(Invalid) in
            let field: Field
            if scanner.peek() == UInt8(ascii: "\"") {
                field = .string(try scanner.stringToken().decoded(from: scanner.bytes))
            } else {
                try scanner.value(depth: 1)
                field = .notString
            }
            if key.hasEscapes {
                // `"typ\u0065"` is `type` to every other reader; rather than read it, refuse it.
                let name = key.decoded(from: scanner.bytes)
                if name == "id" || name == "type" { throw Invalid() }
            } else if key.equals("id", in: scanner.bytes) {
                guard fields.id == .absent else { throw Invalid() }
                fields.id = field
            } else if key.equals("type", in: scanner.bytes) {
                guard fields.type == .absent else { throw Invalid() }
                fields.type = field
            }
        }
        return fields
    }

    /// An object's members from its `{`: `member` reads each value, its key already read.
    private mutating func members(_ member: (inout EnvelopeScanner, StringToken) throws(Invalid) -> Void)
        throws(Invalid)
    {
        try elements(closedBy: UInt8(ascii: "}")) { scanner throws(Invalid) in
            let key = try scanner.stringToken()
            scanner.skipWhitespace()
            try scanner.expect(UInt8(ascii: ":"))
            scanner.skipWhitespace()
            try member(&scanner, key)
        }
    }

    /// A container's comma-separated elements from its opening bracket up to `close`; `element` reads each.
    private mutating func elements(closedBy close: UInt8, _ element: (inout EnvelopeScanner) throws(Invalid) -> Void)
        throws(Invalid)
    {
        index += 1  // the opening bracket
        skipWhitespace()
        if peek() == close {
            index += 1
            return
        }
        while true {
            skipWhitespace()
            try element(&self)
            skipWhitespace()
            switch next() {
            case UInt8(ascii: ","): continue
            case close: return
            default: throw Invalid()
            }
        }
    }

    /// Checks one value of any kind; `depth` counts the containers it sits in.
    private mutating func value(depth: Int) throws(Invalid) {
        switch peek() {
        case UInt8(ascii: "{"):
            guard depth < Self.maxDepth else { throw Invalid() }
            try members { scanner, _ throws(Invalid) in try scanner.value(depth: depth + 1) }
        case UInt8(ascii: "["):
            guard depth < Self.maxDepth else { throw Invalid() }
            try elements(closedBy: UInt8(ascii: "]")) { scanner throws(Invalid) in
                try scanner.value(depth: depth + 1)
            }
        case UInt8(ascii: "\""): _ = try stringToken()
        case UInt8(ascii: "t"): try literal("true")
        case UInt8(ascii: "f"): try literal("false")
        case UInt8(ascii: "n"): try literal("null")
        default: try number()
        }
    }

    /// A string's raw bytes between its quotes, checked; escapes are decoded only for the fields returned.
    private mutating func stringToken() throws(Invalid) -> StringToken {
        try expect(UInt8(ascii: "\""))
        let start = index
        var hasEscapes = false
        while index < bytes.count {
            let byte = bytes[index]
            index += 1
            switch byte {
            case UInt8(ascii: "\""):
                return StringToken(range: start..<(index - 1), hasEscapes: hasEscapes)
            case UInt8(ascii: "\\"):
                hasEscapes = true
                try escape()
            case 0..<0x20:
                throw Invalid()
            default:
                continue
            }
        }
        throw Invalid()
    }

    /// Checks the escape after a backslash: one of `"\/bfnrt`, or `\uXXXX` with surrogates in pairs.
    private mutating func escape() throws(Invalid) {
        switch next() {
        case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"), UInt8(ascii: "b"), UInt8(ascii: "f"),
            UInt8(ascii: "n"), UInt8(ascii: "r"), UInt8(ascii: "t"):
            return
        case UInt8(ascii: "u"):
            let unit = try hex4()
            if (0xDC00...0xDFFF).contains(unit) { throw Invalid() }
            if (0xD800...0xDBFF).contains(unit) {
                guard next() == UInt8(ascii: "\\"), next() == UInt8(ascii: "u"),
                    (0xDC00...0xDFFF).contains(try hex4())
                else { throw Invalid() }
            }
        default:
            throw Invalid()
        }
    }

    private mutating func hex4() throws(Invalid) -> UInt16 {
        var unit: UInt16 = 0
        for _ in 0..<4 {
            guard let digit = Self.hexValue(next()) else { throw Invalid() }
            unit = unit << 4 | UInt16(digit)
        }
        return unit
    }

    private mutating func number() throws(Invalid) {
        if peek() == UInt8(ascii: "-") { index += 1 }
        if peek() == UInt8(ascii: "0") {
            index += 1
        } else {
            try digits()
        }
        if peek() == UInt8(ascii: ".") {
            index += 1
            try digits()
        }
        if peek() == UInt8(ascii: "e") || peek() == UInt8(ascii: "E") {
            index += 1
            if peek() == UInt8(ascii: "+") || peek() == UInt8(ascii: "-") { index += 1 }
            try digits()
        }
    }

    /// One or more decimal digits.
    private mutating func digits() throws(Invalid) {
        let start = index
        while let byte = peek(), (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) { index += 1 }
        guard index > start else { throw Invalid() }
    }

    private mutating func literal(_ word: StaticString) throws(Invalid) {
        let count = word.utf8CodeUnitCount
        guard bytes.count - index >= count else { throw Invalid() }
        for offset in 0..<count where bytes[index + offset] != word.utf8Start[offset] { throw Invalid() }
        index += count
    }

    private mutating func expect(_ byte: UInt8) throws(Invalid) {
        guard next() == byte else { throw Invalid() }
    }

    private mutating func skipWhitespace() {
        while let byte = peek(),
            byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\n") || byte == UInt8(ascii: "\r")
                || byte == UInt8(ascii: "\t")
        {
            index += 1
        }
    }

    private func peek() -> UInt8? {
        index < bytes.count ? bytes[index] : nil
    }

    private mutating func next() -> UInt8? {
        guard index < bytes.count else { return nil }
        defer { index += 1 }
        return bytes[index]
    }

    fileprivate static func hexValue(_ byte: UInt8?) -> UInt8? {
        switch byte {
        case .some(let digit) where (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(digit): digit - UInt8(ascii: "0")
        case .some(let letter) where (UInt8(ascii: "a")...UInt8(ascii: "f")).contains(letter):
            letter - UInt8(ascii: "a") + 10
        case .some(let letter) where (UInt8(ascii: "A")...UInt8(ascii: "F")).contains(letter):
            letter - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}

/// Where a checked JSON string's contents lie in the body.
private struct StringToken {
    var range: Range<Int>
    var hasEscapes: Bool

    /// Whether the string is exactly `key` as written (a key spelled with escapes never matches, as in
    /// no genuine event).
    func equals(_ key: StaticString, in bytes: UnsafeBufferPointer<UInt8>) -> Bool {
        guard !hasEscapes, range.count == key.utf8CodeUnitCount else { return false }
        for offset in 0..<range.count where bytes[range.lowerBound + offset] != key.utf8Start[offset] {
            return false
        }
        return true
    }

    /// The string's value, its escapes decoded (the scan already checked them).
    func decoded(from bytes: UnsafeBufferPointer<UInt8>) -> String {
        let raw = UnsafeBufferPointer(rebasing: bytes[range])
        guard hasEscapes else { return String(decoding: raw, as: UTF8.self) }
        var scalars = String.UnicodeScalarView()
        var utf8: [UInt8] = []
        var index = raw.startIndex
        func flush() {
            if !utf8.isEmpty {
                scalars.append(contentsOf: String(decoding: utf8, as: UTF8.self).unicodeScalars)
                utf8.removeAll(keepingCapacity: true)
            }
        }
        while index < raw.endIndex {
            let byte = raw[index]
            index += 1
            guard byte == UInt8(ascii: "\\") else {
                utf8.append(byte)
                continue
            }
            let kind = raw[index]
            index += 1
            switch kind {
            case UInt8(ascii: "b"): utf8.append(0x08)
            case UInt8(ascii: "f"): utf8.append(0x0C)
            case UInt8(ascii: "n"): utf8.append(0x0A)
            case UInt8(ascii: "r"): utf8.append(0x0D)
            case UInt8(ascii: "t"): utf8.append(0x09)
            case UInt8(ascii: "u"):
                var unit = Self.hex4(raw, at: index)
                index += 4
                if (0xD800...0xDBFF).contains(unit) {
                    let low = Self.hex4(raw, at: index + 2)
                    index += 6
                    unit = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00)
                }
                flush()
                scalars.append(Unicode.Scalar(unit) ?? "\u{FFFD}")
            default: utf8.append(kind)  // " \ /
            }
        }
        flush()
        return String(scalars)
    }

    private static func hex4(_ raw: UnsafeBufferPointer<UInt8>, at index: Int) -> UInt32 {
        var unit: UInt32 = 0
        for offset in 0..<4 { unit = unit << 4 | UInt32(EnvelopeScanner.hexValue(raw[index + offset]) ?? 0) }
        return unit
    }
}
