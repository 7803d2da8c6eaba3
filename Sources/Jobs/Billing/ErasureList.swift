import Foundation
public import PGQueue

/// The users whose personal data was erased (`billing.erasures`), in a form that outlives the database.
///
/// A backup restored after an erasure brings the erased data back. So every erasure is listed (user id and
/// the deletion's version, no personal data), logged as it happens, and can be exported; after a restore,
/// an operator applies the list again and each user is erased exactly as the deletion did.
///
/// The text form is one erasure a line, `USER_ID VERSION`; ``parse(_:)`` also reads the journal lines that
/// the `clerk.event` job writes (`... User erased ... user.id=USER_ID erasure.version=VERSION`).
public enum ErasureList {
    /// One erased user.
    public struct Entry: Sendable, Hashable {
        /// The Clerk user id.
        public var userID: String
        /// The deletion's Clerk timestamp in milliseconds: the erasure is applied at this version.
        public var version: Int64

        public init(userID: String, version: Int64) {
            self.userID = userID
            self.version = version
        }
    }

    /// Every listed erasure, oldest first.
    public static func export(on connection: PostgresConnection) throws(PostgresError) -> [Entry] {
        try BillingStore(connection).erasures()
    }

    /// Applies each erasure again, in one transaction.
    /// - Returns: how many users were erased now (the others were already listed).
    public static func apply(_ entries: [Entry], on connection: PostgresConnection) throws -> Int {
        try connection.transaction(context: "applying erasures") { connection in
            let store = BillingStore(connection)
            return try entries.reduce(0) { erased, entry in erased + (try store.reapply(entry) ? 1 : 0) }
        }
    }

    /// The text form: `USER_ID VERSION` a line.
    public static func render(_ entries: [Entry]) -> String {
        entries.map { "\($0.userID) \($0.version)\n" }.joined()
    }

    /// Reads the text form, or journal lines, skipping blank lines and lines that are not erasures.
    /// - Throws: ``ErasureListError`` naming the first line that looks like an erasure but cannot be read.
    public static func parse(_ text: String) throws(ErasureListError) -> [Entry] {
        var entries: [Entry] = []
        for (index, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("#") { continue }
            let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            let userID: Substring?
            let version: Substring?
            if line.contains("user.id=") {
                userID = value(of: "user.id=", in: fields)
                version = value(of: "erasure.version=", in: fields)
            } else if fields.count == 2 {
                (userID, version) = (fields[0], fields[1])
            } else {
                continue
            }
            guard let userID, !userID.isEmpty, let version, let number = Int64(version) else {
                throw ErasureListError(line: index + 1, text: String(line))
            }
            entries.append(Entry(userID: String(userID), version: number))
        }
        return entries
    }

    private static func value(of key: String, in fields: [Substring]) -> Substring? {
        fields.first { $0.hasPrefix(key) }.map { $0.dropFirst(key.count) }
    }
}

/// A line of an erasure list that names an erasure but cannot be read.
public struct ErasureListError: Error, Sendable, CustomStringConvertible {
    /// The line's number, from 1.
    public var line: Int
    public var text: String
    public var description: String {
        "line \(line) is not 'USER_ID VERSION' (VERSION the deletion's timestamp in ms): \(text)"
    }
}
