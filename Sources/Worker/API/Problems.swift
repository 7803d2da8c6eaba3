import Foundation
import HTTPTypes
import OpenAPIRuntime

/// The API's error responses (RFC 9457 problem details), each with a stable `type`.
enum Problems {
    static func problem(
        _ slug: String, _ title: String, status: Int, detail: String? = nil, jobID: Int64? = nil,
        errors: [(field: String, reason: String)] = []
    ) -> Components.Schemas.Problem {
        Components.Schemas.Problem(
            _type: "urn:sluice:problem:\(slug)", title: title, status: status, detail: detail, jobId: jobID,
            errors: errors.isEmpty ? nil : errors.map { .init(field: $0.field, reason: $0.reason) })
    }

    /// 401, with the challenge a client needs.
    static func unauthorized(_ detail: String, tokenPresented: Bool) -> Components.Responses.Unauthorized {
        let challenge =
            tokenPresented
            ? #"Bearer realm="sluice", error="invalid_token", error_description="\#(detail)""#
            : #"Bearer realm="sluice""#
        return .init(
            headers: .init(wwwAuthenticate: challenge),
            body: .applicationProblemJson(problem("unauthorized", "Unauthorized", status: 401, detail: detail)))
    }

    static func forbidden(_ detail: String) -> Components.Responses.Forbidden {
        .init(body: .applicationProblemJson(problem("missing-scope", "Forbidden", status: 403, detail: detail)))
    }

    static func notFound(_ detail: String) -> Components.Responses.NotFound {
        .init(body: .applicationProblemJson(problem("not-found", "Not Found", status: 404, detail: detail)))
    }

    static func conflict(_ detail: String) -> Components.Responses.Conflict {
        .init(body: .applicationProblemJson(problem("idempotency-key-reused", "Conflict", status: 409, detail: detail)))
    }

    static func unprocessable(_ errors: [(field: String, reason: String)]) -> Components.Responses.Unprocessable {
        .init(
            body: .applicationProblemJson(
                problem(
                    "invalid-field", "Unprocessable Content", status: 422,
                    detail: errors.map { "\($0.field): \($0.reason)" }.joined(separator: "; "), errors: errors)))
    }

    /// 409: another of the user's subscription changes is at Stripe now.
    static func actionPending(jobID: Int64, kind: String) -> Components.Responses.ActionPending {
        .init(
            body: .applicationProblemJson(
                problem(
                    "action-pending", "Conflict", status: 409,
                    detail: "the user's \(kind) (job \(jobID)) is running now; follow /v1/jobs/\(jobID) and ask "
                        + "again once it is over", jobID: jobID)))
    }

    /// 422 for a Stripe action that Stripe or the billing model refused (its job failed for good).
    static func refused(_ detail: String, jobID: Int64) -> Components.Schemas.Problem {
        problem("action-refused", "Unprocessable Content", status: 422, detail: detail, jobID: jobID)
    }

    static func tooManyRequests(retryAfter seconds: Int, limit: String = "SLUICE_API_RATE_LIMIT")
        -> Components.Responses.TooManyRequests
    {
        .init(
            headers: .init(retryAfter: seconds),
            body: .applicationProblemJson(
                problem(
                    "rate-limited", "Too Many Requests", status: 429,
                    detail: "more than \(limit) requests a second from this caller; retry in \(seconds) s")))
    }

    static func unavailable(_ detail: String) -> Components.Responses.Unavailable {
        .init(
            headers: .init(retryAfter: 5),
            body: .applicationProblemJson(problem("unavailable", "Service Unavailable", status: 503, detail: detail)))
    }
}
