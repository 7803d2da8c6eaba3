import AsyncHTTPClient
import Foundation
import Metrics
import NIOCore
import NIOHTTP1
import Synchronization

/// One answer of Stripe's API: the JSON object, and the server's time (for the model's versions).
struct StripeResponse {
    var object: [String: Any]
    var body: String
    /// Unix seconds from the `Date` header, else the local clock.
    var time: Int
}

/// A small blocking client for Stripe's form-encoded API, made for job handlers, which run on threads of
/// their own. Requests carry the pinned `Stripe-Version` and, for writes, an `Idempotency-Key` the caller
/// derives from the job, so a retried job repeats the same request and Stripe answers it once.
public final class StripeClient: Sendable {
    public let settings: StripeSettings
    private let limiter: RateLimiter

    public init(settings: StripeSettings) {
        self.settings = settings
        limiter = RateLimiter(perSecond: settings.requestsPerSecond)
    }

    /// Sends a request and waits for its answer.
    ///
    /// - Parameters:
    ///   - form: `application/x-www-form-urlencoded` pairs, nested keys already flattened
    ///     (`items[0][price]`); sent as the query of a GET.
    ///   - idempotencyKey: the same key for every retry of one job's request.
    func send(
        _ method: HTTPMethod, _ path: String, form: [(String, String)] = [], idempotencyKey: String? = nil
    ) throws(StripeError) -> StripeResponse {
        guard let apiKey = settings.apiKey, !apiKey.isEmpty else {
            throw StripeError(action: .fail, description: "STRIPE_API_KEY is not set; set it and retry the dead letter")
        }
        let encoded = form.map { "\(Self.percentEncode($0.0))=\(Self.percentEncode($0.1))" }.joined(separator: "&")
        let url = settings.baseURL + path + (method == .GET && !encoded.isEmpty ? "?" + encoded : "")
        var request: HTTPClient.Request
        do {
            request = try HTTPClient.Request(url: url, method: method)
        } catch {
            throw StripeError(action: .fail, description: "STRIPE_API_BASE gives a bad URL \(url): \(error)")
        }
        request.headers.add(name: "Authorization", value: "Bearer \(apiKey)")
        request.headers.add(name: "Stripe-Version", value: settings.version)
        if let idempotencyKey, method != .GET { request.headers.add(name: "Idempotency-Key", value: idempotencyKey) }
        if method != .GET {
            request.headers.add(name: "Content-Type", value: "application/x-www-form-urlencoded")
            request.body = .string(encoded)
        }

        limiter.acquire()
        let response: HTTPClient.Response
        do {
            response = try HTTPClient.shared.execute(
                request: request, deadline: .now() + .milliseconds(Int64(settings.timeoutSeconds * 1000))
            ).wait()
        } catch {
            Self.count("network")
            throw StripeError(action: .retry, description: "Stripe \(method) \(path): \(error)")
        }
        let body = response.body.map { String(decoding: $0.readableBytesView, as: UTF8.self) } ?? ""
        let object = (try? JSONSerialization.jsonObject(with: Data(body.utf8))) as? [String: Any] ?? [:]
        let status = Int(response.status.code)
        Self.count(
            (200..<300).contains(status)
                ? "ok" : status == 429 ? "rate_limited" : status >= 500 ? "server_error" : "client_error")
        guard (200..<300).contains(status) else {
            let error = object["error"] as? [String: Any] ?? [:]
            let detail = [error["type"], error["code"], error["decline_code"]].compactMap { $0 as? String }
                .joined(separator: ", ")
            let message = error["message"] as? String ?? body.prefix(200).description
            let description = "Stripe \(method) \(path) answered \(status) (\(detail)): \(message)"
            // Stripe says outright whether a retry can help; without that, a 409 is a request that collided
            // with its own earlier try (same idempotency key, still in flight), which a retry answers.
            switch (status, response.headers.first(name: "Stripe-Should-Retry")) {
            case (429, _):
                let wait = response.headers.first(name: "Retry-After").flatMap(Double.init) ?? 1
                throw StripeError(action: .waitAndRetry(seconds: max(wait, 0.1)), description: description)
            case (_, "true"), (409, nil), (500..., nil): throw StripeError(action: .retry, description: description)
            default: throw StripeError(action: .fail, description: description)
            }
        }
        let time =
            response.headers.first(name: "Date").flatMap(Self.parseHTTPDate) ?? Int(Date().timeIntervalSince1970)
        return StripeResponse(object: object, body: body, time: time)
    }

    /// `sluice_stripe_requests_total{outcome}`: ok, client_error, server_error, rate_limited, network.
    private static func count(_ outcome: String) {
        Counter(label: "sluice_stripe_requests_total", dimensions: [("outcome", outcome)]).increment()
    }

    /// An object id to place in a URL path: Stripe ids are letters, digits and underscores, so anything else
    /// (a slash, a dot, a query) is refused before it can reach another endpoint.
    static func pathID(_ id: String) throws(StripeError) -> String {
        guard !id.isEmpty, id.count <= 255, id.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_") })
        else {
            throw StripeError(action: .fail, description: "\"\(id.prefix(80))\" is not a Stripe object id")
        }
        return id
    }

    /// Form encoding as Stripe reads it: everything but unreserved characters percent-encoded.
    static func percentEncode(_ text: String) -> String {
        var allowed = CharacterSet.alphanumerics
        allowed.insert(charactersIn: "-._~")
        return text.addingPercentEncoding(withAllowedCharacters: allowed) ?? text
    }

    private static func parseHTTPDate(_ text: String) -> Int? {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "GMT")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss zzz"
        return formatter.date(from: text).map { Int($0.timeIntervalSince1970) }
    }
}
