import Foundation
import TestKit

/// A stand-in for Stripe's API, in the test process: answers like Stripe from the shapes in
/// `stripe/objects.json`, records every request it received, and can be told to answer the next
/// requests to a path with a given status first (a 500, a 429 with Retry-After, a 402 card error).
///
/// A plain socket server on a thread of its own, one request per connection: test functions block
/// Swift concurrency's few threads while they wait for the `sluice` process, so a server that needed
/// those threads would starve.
final class FakeStripe: Sendable {
    struct Received: Sendable {
        var method: String
        var path: String
        /// By lower-case name.
        var headers: [String: String]
        var form: [String: String]
        var at: Date
        /// The raw body, for requests that are not forms (a webhook delivered to the app).
        var body: String = ""
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
    private let subscriptionTemplate: String
    private let listener: Int32
    let port: Int

    init() throws {
        let objects = try JSONSerialization.jsonObject(with: Data(WebhookSigning.fixture("stripe/objects.json")))
        let resources = (objects as? [String: Any])?["resources"] as? [String: Any] ?? [:]
        subscriptionTemplate = String(
            decoding: try JSONSerialization.data(withJSONObject: resources["subscription"] ?? [:]), as: UTF8.self)
        let (listener, port) = try Loopback.bind(listening: 64)
        self.listener = listener
        self.port = port
        let thread = Thread { [self] in
            while true {
                let client = accept(listener, nil, nil)
                if client < 0 { return }
                serve(client)
                close(client)
            }
        }
        thread.start()
    }

    deinit {
        shutdown(listener, Int32(SHUT_RDWR))
        close(listener)
    }

    var url: String { "http://127.0.0.1:\(port)" }

    var received: [Received] { state.value.withLock { $0.received } }

    /// The next requests to `method path` get these answers, in order, before the default one.
    func script(_ method: String, _ path: String, _ answers: [Scripted]) {
        state.value.withLock { $0.scripted["\(method) \(path)", default: []].append(contentsOf: answers) }
    }

    /// Reads one request (headers and a Content-Length body) and answers it.
    private func serve(_ client: Int32) {
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65_536)
        var bodyStart: Int?
        var contentLength = 0
        while bodyStart.map({ bytes.count < $0 + contentLength }) ?? true {
            let count = buffer.withUnsafeMutableBytes { recv(client, $0.baseAddress, $0.count, 0) }
            if count <= 0 { return }
            bytes.append(contentsOf: buffer[..<count])
            if bodyStart == nil, let end = Self.headerEnd(bytes) {
                bodyStart = end
                let head = String(decoding: bytes[..<end], as: UTF8.self).lowercased()
                for line in head.split(separator: "\r\n") where line.hasPrefix("content-length:") {
                    contentLength =
                        Int(line.dropFirst("content-length:".count).trimmingCharacters(in: .whitespaces)) ?? 0
                }
            }
        }
        guard let start = bodyStart else { return }
        let lines = String(decoding: bytes[..<start], as: UTF8.self).split(separator: "\r\n")
        let requestLine = lines.first?.split(separator: " ") ?? []
        guard requestLine.count >= 2 else { return }
        let method = String(requestLine[0])
        let target = requestLine[1].split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)
        let path = String(target[0])
        var headers: [String: String] = [:]
        for line in lines.dropFirst() {
            let parts = line.split(separator: ":", maxSplits: 1)
            if parts.count == 2 { headers[parts[0].lowercased()] = parts[1].trimmingCharacters(in: .whitespaces) }
        }
        let body = String(decoding: bytes[start...], as: UTF8.self)
        var form: [String: String] = [:]
        for pair in (method == "GET" ? (target.count > 1 ? String(target[1]) : "") : body).split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false).map {
                String($0).replacingOccurrences(of: "+", with: " ").removingPercentEncoding ?? String($0)
            }
            form[parts[0]] = parts.count > 1 ? parts[1] : ""
        }
        let scripted = state.value.withLock { state -> Scripted? in
            state.received.append(
                Received(method: method, path: path, headers: headers, form: form, at: Date(), body: body))
            guard var queue = state.scripted["\(method) \(path)"], !queue.isEmpty else { return nil }
            let next = queue.removeFirst()
            state.scripted["\(method) \(path)"] = queue
            return next
        }
        let answer = scripted ?? defaultAnswer(method: method, path: path, form: form)
        var response = "HTTP/1.1 \(answer.status) X\r\nContent-Type: application/json\r\n"
        response += "Content-Length: \(answer.body.utf8.count)\r\nConnection: close\r\n"
        for (name, value) in answer.headers { response += "\(name): \(value)\r\n" }
        let out = Array((response + "\r\n" + answer.body).utf8)
        var sent = 0
        while sent < out.count {
            let count = out[sent...].withUnsafeBytes { send(client, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if count <= 0 { return }
            sent += count
        }
    }

    private static func headerEnd(_ bytes: [UInt8]) -> Int? {
        guard bytes.count >= 4 else { return nil }
        for index in 3..<bytes.count
        where bytes[index - 3] == 13 && bytes[index - 2] == 10 && bytes[index - 1] == 13 && bytes[index] == 10 {
            return index + 1
        }
        return nil
    }

    /// What Stripe would answer, shaped from objects.json.
    private func defaultAnswer(method: String, path: String, form: [String: String]) -> Scripted {
        let json: [String: Any]
        if path.hasPrefix("/v1/subscriptions/") {
            var object =
                (try? JSONSerialization.jsonObject(with: Data(subscriptionTemplate.utf8))) as? [String: Any] ?? [:]
            object["id"] = String(path.dropFirst("/v1/subscriptions/".count))
            object["customer"] = "cus_1"
            object["status"] = method == "DELETE" ? "canceled" : "active"
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
        } else if path == "/v1/billing/meter_events" {
            json = [
                "object": "billing.meter_event", "identifier": form["identifier"] ?? "",
                "event_name": form["event_name"] ?? "",
            ]
        } else if path.hasPrefix("/hooks") {
            // Standing in for the app's webhook endpoint.
            return Scripted(status: 200, body: "{}")
        } else if path == "/v1/checkout/sessions" {
            json = ["id": "cs_test", "object": "checkout.session", "url": "https://checkout.stripe.com/c/pay/cs_test"]
        } else {
            return Scripted(
                status: 404, body: #"{"error":{"type":"invalid_request_error","message":"Unrecognized request URL"}}"#)
        }
        let data = (try? JSONSerialization.data(withJSONObject: json)) ?? Data("{}".utf8)
        return Scripted(status: 200, body: String(decoding: data, as: UTF8.self))
    }
}
