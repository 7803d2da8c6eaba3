import Foundation
import Hummingbird
import NIOCore
import Synchronization
import TestKit

/// A stand-in for Stripe's API, in the test process: answers like Stripe from the shapes in
/// `stripe/objects.json`, records every request it received, and can be told to answer the next
/// requests to a path with a given status first (a 500, a 429 with Retry-After, a 402 card error).
final class FakeStripe: Sendable {
    struct Received: Sendable {
        var method: String
        var path: String
        /// By lower-case name.
        var headers: [String: String]
        var form: [String: String]
        var at: Date
    }

    struct Scripted: Sendable {
        var status: Int
        var body: String
        var headers: [String: String] = [:]
    }

    private struct State {
        var received: [Received] = []
        var scripted: [String: [Scripted]] = [:]
    }

    private let state = Box(State())
    private let task = Mutex<Task<Void, any Error>?>(nil)
    let port: Int

    init() async throws {
        let objects = try JSONSerialization.jsonObject(with: Data(WebhookSigning.fixture("stripe/objects.json")))
        let resources = (objects as? [String: Any])?["resources"] as? [String: Any] ?? [:]
        let subscription = String(
            decoding: try JSONSerialization.data(withJSONObject: resources["subscription"] ?? [:]), as: UTF8.self)
        let router = Router()
        let state = state
        for method in [HTTPRequest.Method.get, .post, .delete] {
            router.on("/v1/**", method: method) { request, context in
                try await Self.answer(request, context, state, subscription)
            }
        }
        let bound = AsyncStream<Int>.makeStream()
        let app = Application(
            router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)),
            onServerRunning: { channel in bound.continuation.yield(channel.localAddress?.port ?? 0) })
        task.withLock { $0 = Task { try await app.runService(gracefulShutdownSignals: []) } }
        var iterator = bound.stream.makeAsyncIterator()
        port = await iterator.next() ?? 0
    }

    deinit {
        task.withLock { $0?.cancel() }
    }

    var url: String { "http://127.0.0.1:\(port)" }

    var received: [Received] { state.value.withLock { $0.received } }

    /// The next requests to `method path` get these answers, in order, before the default one.
    func script(_ method: String, _ path: String, _ answers: [Scripted]) {
        state.value.withLock { $0.scripted["\(method) \(path)", default: []].append(contentsOf: answers) }
    }

    private static func answer(
        _ request: Request, _ context: BasicRequestContext, _ state: Box<State>, _ subscriptionTemplate: String
    ) async throws -> Response {
        let body = String(buffer: try await request.body.collect(upTo: 1 << 20))
        let query = request.uri.query ?? ""
        var form: [String: String] = [:]
        for pair in (request.method == .get ? query : body).split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false).map {
                String($0).removingPercentEncoding ?? String($0)
            }
            form[parts[0]] = parts.count > 1 ? parts[1] : ""
        }
        var headers: [String: String] = [:]
        for field in request.headers { headers[field.name.canonicalName.lowercased()] = field.value }
        let path = request.uri.path
        let key = "\(request.method.rawValue) \(path)"
        let scripted = state.value.withLock { state -> Scripted? in
            state.received.append(
                Received(method: request.method.rawValue, path: path, headers: headers, form: form, at: Date()))
            guard var queue = state.scripted[key], !queue.isEmpty else { return nil }
            let next = queue.removeFirst()
            state.scripted[key] = queue
            return next
        }
        if let scripted {
            var response = Response(
                status: .init(code: scripted.status), body: .init(byteBuffer: ByteBuffer(string: scripted.body)))
            if let retryAfter = scripted.headers["Retry-After"] { response.headers[.retryAfter] = retryAfter }
            return response
        }
        let json: [String: Any]
        if path.hasPrefix("/v1/subscriptions/") {
            var object =
                try JSONSerialization.jsonObject(with: Data(subscriptionTemplate.utf8)) as? [String: Any] ?? [:]
            let id = String(path.dropFirst("/v1/subscriptions/".count))
            object["id"] = id
            object["customer"] = "cus_1"
            object["status"] = request.method == .delete ? "canceled" : "active"
            object["cancel_at_period_end"] = form["cancel_at_period_end"] == "true"
            if var items = object["items"] as? [String: Any], var data = items["data"] as? [[String: Any]],
                var item = data.first
            {
                item["id"] = "si_test"
                var price = item["price"] as? [String: Any] ?? [:]
                if let newPrice = form["items[0][price]"] {
                    price["id"] = newPrice
                    price["lookup_key"] = newPrice.replacingOccurrences(of: "price_", with: "")
                }
                item["price"] = price
                data[0] = item
                items["data"] = data
                object["items"] = items
            }
            json = object
        } else if path == "/v1/billing_portal/sessions" {
            json = [
                "id": "bps_test", "object": "billing_portal.session",
                "url": "https://billing.stripe.com/p/session/test_\(form["customer"] ?? "")",
            ]
        } else if path == "/v1/checkout/sessions" {
            json = ["id": "cs_test", "object": "checkout.session", "url": "https://checkout.stripe.com/c/pay/cs_test"]
        } else {
            return Response(
                status: .notFound,
                body: .init(
                    byteBuffer: ByteBuffer(
                        string: #"{"error":{"type":"invalid_request_error","message":"Unrecognized request URL"}}"#)))
        }
        let data = try JSONSerialization.data(withJSONObject: json)
        return Response(
            status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }
}
