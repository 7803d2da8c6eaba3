import Foundation
public import PGQueue

/// Reads a job's JSON payload into a `Decodable` type; a payload that does not fit fails the job for good
/// with a message naming the field, since retrying cannot change it.
public enum JobPayload {
    public static func decode<Payload: Decodable>(_ type: Payload.Type, from job: ClaimedJob) throws(JobError)
        -> Payload
    {
        do {
            return try JSONDecoder().decode(type, from: Data(job.payload.utf8))
        } catch let error as DecodingError {
            throw .permanent(message(error))
        } catch {
            throw .permanent("the payload cannot be read: \(error)")
        }
    }

    /// "payload field price is missing", "payload field quantity must be a number", …
    static func message(_ error: DecodingError) -> String {
        message(error, field: "payload field", document: "the payload")
    }

    /// Names what a JSON document lacks or has of the wrong type, for a job's payload or a request's body:
    /// "`field` price is missing", "`field` quantity must be a number", "`document` is not a JSON object".
    public static func message(_ error: DecodingError, field: String, document: String) -> String {
        func path(_ keys: [any CodingKey]) -> String { keys.map(\.stringValue).joined(separator: ".") }
        switch error {
        case .keyNotFound(let key, let context):
            return "\(field) \(path(context.codingPath + [key])) is missing"
        case .valueNotFound(let type, let context), .typeMismatch(let type, let context):
            guard !context.codingPath.isEmpty else { return "\(document) is not a JSON object" }
            return "\(field) \(path(context.codingPath)) must be \(describe(type))"
        case .dataCorrupted(let context):
            guard !context.codingPath.isEmpty else { return "\(document) is not a JSON object" }
            return "\(field) \(path(context.codingPath)) \(context.debugDescription)"
        @unknown default:
            return "\(document) cannot be read: \(error)"
        }
    }

    private static func describe(_ type: Any.Type) -> String {
        switch type {
        case is String.Type, is NonEmptyString.Type: "a non-empty string"
        case is Int.Type, is Int64.Type, is Double.Type: "a number"
        case is Bool.Type: "true or false"
        default: "a \(type)"
        }
    }
}

/// A payload string that must not be empty (an id, a URL, a price).
public struct NonEmptyString: Codable, Sendable, Hashable, CustomStringConvertible {
    public let value: String

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        value = try container.decode(String.self)
        guard !value.isEmpty else {
            throw DecodingError.dataCorruptedError(in: container, debugDescription: "must be a non-empty string")
        }
    }

    public init?(_ value: String) {
        guard !value.isEmpty else { return nil }
        self.value = value
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(value)
    }

    public var description: String { value }
}
