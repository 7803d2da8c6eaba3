import Foundation
import HTTPTypes
import Jobs
import Logging
import OpenAPIRuntime

/// What every request of the app's API goes through before and after its handler: the per-caller rate
/// limit, the 64 KiB body limit, the bearer token for the handlers, requests the generated code cannot
/// read turned into 400 problems, the access log line and the metrics.
struct APIMiddleware: ServerMiddleware {
    static let maxBodyBytes = 64 << 10

    let limiter: CallerRateLimiter
    let metrics: SluiceMetrics
    let logger: Logger
    /// `API request` lines per status code every ten seconds: a caller chooses how many requests come, and
    /// junk requests (401, 429) cost a sender nothing.
    let lines: LogBudget<Int>

    init(limiter: CallerRateLimiter, metrics: SluiceMetrics, logger: Logger) {
        self.limiter = limiter
        self.metrics = metrics
        self.logger = logger
        lines = LogBudget(linesPerWindow: 100) { status, count in
            logger.info("API request lines skipped", metadata: ["http.status": "\(status)", "log.skipped": "\(count)"])
        }
    }

    func intercept(
        _ request: HTTPRequest, body: HTTPBody?, metadata: ServerRequestMetadata, operationID: String,
        next: @Sendable (HTTPRequest, HTTPBody?, ServerRequestMetadata) async throws -> (HTTPResponse, HTTPBody?)
    ) async throws -> (HTTPResponse, HTTPBody?) {
        let started = ContinuousClock.now
        let header = request.headerFields[.authorization] ?? ""
        let token =
            header.count > 7 && header.prefix(7).lowercased() == "bearer "
            ? PresentedToken(String(header.dropFirst(7))) : nil
        let caller = APIRequest.CallerNote()
        var (response, responseBody) = try await answer(
            request, body: body, metadata: metadata, token: token, caller: caller, next: next)
        // Header parameters are percent-encoded by the generated code; a challenge and a job's URL must go as
        // written (both are built here, never from the request).
        for name in [HTTPField.Name.wwwAuthenticate, .location] {
            if let value = response.headerFields[name] {
                response.headerFields[name] = value.removingPercentEncoding ?? value
            }
        }
        let elapsed = (ContinuousClock.now - started).nanoseconds
        metrics.apiRequest(operation: operationID, status: response.status.code, nanoseconds: elapsed)
        if response.status.code == 401 { metrics.apiRefused(reason: token == nil ? "missing" : "invalid") }
        if response.status.code == 403 { metrics.apiRefused(reason: "scope") }
        guard lines.admit(Int(response.status.code), on: logger) else {
            return (response, responseBody)
        }
        logger.info(
            "API request",
            metadata: [
                "http.method": "\(request.method)", "api.operation": "\(operationID)",
                "http.status": "\(response.status.code)", "duration_ms": "\(elapsed / 1_000_000)",
                "caller": "\(caller.description)",
            ])
        return (response, responseBody)
    }

    private func answer(
        _ request: HTTPRequest, body: HTTPBody?, metadata: ServerRequestMetadata, token: PresentedToken?,
        caller: APIRequest.CallerNote,
        next: @Sendable (HTTPRequest, HTTPBody?, ServerRequestMetadata) async throws -> (HTTPResponse, HTTPBody?)
    ) async throws -> (HTTPResponse, HTTPBody?) {
        if let wait = limiter.admit(token: token) {
            metrics.apiRefused(reason: "rate_limited")
            var response = Self.problemResponse(
                .tooManyRequests, "rate-limited", "Too Many Requests",
                "too many requests whose credentials are not verified yet; retry in \(wait) s")
            response.0.headerFields[.retryAfter] = "\(wait)"
            return response
        }
        var body = body
        if let incoming = body {
            // A declared length over the limit is refused unread; an undeclared one is read up to it.
            if case .known(let length) = incoming.length, length > Self.maxBodyBytes {
                metrics.apiRefused(reason: "too_large")
                return Self.tooLarge()
            }
            let bytes: [UInt8]
            do {
                bytes = try await [UInt8](collecting: incoming, upTo: Self.maxBodyBytes)
            } catch {
                metrics.apiRefused(reason: "too_large")
                return Self.tooLarge()
            }
            if let field = Self.nullField(bytes) {
                return Self.problemResponse(
                    .badRequest, "bad-request", "Bad Request", "\(field) is null; leave an optional field out instead")
            }
            body = HTTPBody(bytes)
        }
        do {
            return try await APIRequest.$token.withValue(token) {
                try await APIRequest.$caller.withValue(caller) { try await next(request, body, metadata) }
            }
        } catch let error as ServerError where error.underlyingError is DecodingError || error.httpStatus.code < 500 {
            let detail =
                (error.underlyingError as? DecodingError).map {
                    JobPayload.message($0, field: "field", document: "the body")
                } ?? "\(error.underlyingError)"
            return Self.problemResponse(.badRequest, "bad-request", "Bad Request", detail)
        }
    }

    /// A top-level member of a JSON object body that is `null`: the generated decoder reads it as absent, and
    /// the document allows no null, so it is refused rather than taken for a default.
    static func nullField(_ bytes: [UInt8]) -> String? {
        guard bytes.count >= 4, String(decoding: bytes, as: UTF8.self).contains("null"),
            let object = try? JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any]
        else { return nil }
        return object.filter { $0.value is NSNull }.keys.sorted().first
    }

    private static func tooLarge() -> (HTTPResponse, HTTPBody?) {
        problemResponse(
            .contentTooLarge, "too-large", "Content Too Large", "a request body is at most \(maxBodyBytes) bytes")
    }

    private static func problemResponse(
        _ status: HTTPResponse.Status, _ slug: String, _ title: String, _ detail: String
    )
        -> (HTTPResponse, HTTPBody?)
    {
        let problem = Problems.problem(slug, title, status: status.code, detail: detail)
        var response = HTTPResponse(status: status)
        response.headerFields[.contentType] = "application/problem+json"
        return (response, HTTPBody((try? JSONEncoder().encode(problem)) ?? Data()))
    }
}
