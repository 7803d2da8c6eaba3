import Foundation
import HTTPTypes
import OpenAPIRuntime

/// The bearer token of the request being answered, for the API's handlers (the generated inputs carry no
/// security scheme).
enum BearerToken {
    @TaskLocal static var current: String?

    /// Reads `Authorization: Bearer <token>` into ``current`` for the rest of the request, and turns what
    /// the generated code cannot read (a missing header, a body that does not fit) into a 400 problem.
    struct Middleware: ServerMiddleware {
        func intercept(
            _ request: HTTPRequest, body: HTTPBody?, metadata: ServerRequestMetadata, operationID: String,
            next: @Sendable (HTTPRequest, HTTPBody?, ServerRequestMetadata) async throws -> (HTTPResponse, HTTPBody?)
        ) async throws -> (HTTPResponse, HTTPBody?) {
            let header = request.headerFields[.authorization] ?? ""
            let token =
                header.count > 7 && header.prefix(7).lowercased() == "bearer " ? String(header.dropFirst(7)) : nil
            do {
                var (response, responseBody) = try await BearerToken.$current.withValue(token) {
                    try await next(request, body, metadata)
                }
                // Header parameters are percent-encoded by the generated code; a challenge must go as written.
                if let challenge = response.headerFields[.wwwAuthenticate] {
                    response.headerFields[.wwwAuthenticate] = challenge.removingPercentEncoding ?? challenge
                }
                return (response, responseBody)
            } catch let error as ServerError where error.underlyingError is DecodingError || error.httpStatus.code < 500
            {
                let detail =
                    (error.underlyingError as? DecodingError).map(Self.describe) ?? "\(error.underlyingError)"
                let problem = Problems.problem("bad-request", "Bad Request", status: 400, detail: detail)
                let data = (try? JSONEncoder().encode(problem)) ?? Data()
                var response = HTTPResponse(status: .badRequest)
                response.headerFields[.contentType] = "application/problem+json"
                return (response, HTTPBody(data))
            }
        }

        /// Names the field a request body lacks or has of the wrong type.
        private static func describe(_ error: DecodingError) -> String {
            func field(_ path: [any CodingKey]) -> String { path.map(\.stringValue).joined(separator: ".") }
            switch error {
            case .keyNotFound(let key, let context): return "field \(field(context.codingPath + [key])) is missing"
            case .typeMismatch(_, let context), .valueNotFound(_, let context):
                return context.codingPath.isEmpty
                    ? "the body is not the JSON object expected"
                    : "field \(field(context.codingPath)) has the wrong type"
            case .dataCorrupted(let context):
                return context.codingPath.isEmpty
                    ? "the body is not JSON" : "field \(field(context.codingPath)) cannot be read"
            @unknown default: return "the body cannot be read"
            }
        }
    }
}
