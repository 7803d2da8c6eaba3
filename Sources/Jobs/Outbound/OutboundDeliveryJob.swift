import AsyncHTTPClient
import Foundation
import Logging
import Metrics
import NIOCore
import NIOHTTP1
public import PGQueue

/// `outbound.deliver` (queue `outbound`, owner-only): POSTs one outbound event to one endpoint, signed as
/// Standard Webhooks says, with the same `webhook-id` (the event's id) on every attempt.
///
/// A 2xx delivers it. A 410 Gone disables the endpoint and ends the job. Any other answer, a redirect (never
/// followed) or a network error fails the attempt: the next waits as `outbound_retry_schedule` says (about
/// three days in all), or longer when the endpoint sent `Retry-After`; the last failure dead-letters the job.
/// An endpoint failing without a success for `outbound_disable_after` is disabled. An event that was erased
/// or pruned, or an endpoint that is disabled, ends the job without a request.
public struct OutboundDeliveryJob: JobHandler {
    public let kind = "outbound.deliver"
    /// Every delivery waits in this queue, which a worker of every queue works in a lane of its own.
    public static let queue = "outbound"
    /// The request's own limit is 10 s; the rest is the database.
    public let timeoutSeconds: Double = 60
    static let requestSeconds: Int64 = 10
    /// A `Retry-After` longer than this is taken as this.
    static let longestRetryAfter: Double = 86_400

    public init() {}

    struct Payload: Decodable {
        var eventID: NonEmptyString
        var endpointID: Int64

        enum CodingKeys: String, CodingKey {
            case eventID = "event_id", endpointID = "endpoint_id"
        }
    }

    /// One client for every delivery of the process: connections are kept per host; redirects are answers.
    static let client: HTTPClient = {
        var configuration = HTTPClient.Configuration()
        configuration.redirectConfiguration = .disallow
        configuration.timeout = .init(connect: .seconds(5), read: .seconds(requestSeconds))
        configuration.decompression = .disabled
        return HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }()

    public func handle(_ job: ClaimedJob, context: JobContext) throws -> JobOutcome {
        let payload = try JobPayload.decode(Payload.self, from: job)
        let store = OutboundStore(try context.connection())
        guard let delivery = try store.delivery(event: payload.eventID.value, endpoint: payload.endpointID) else {
            context.logger.info("Outbound event or endpoint is gone; nothing sent")
            return .success
        }
        let endpoint = delivery.endpoint
        guard endpoint.enabled else {
            context.logger.info("Outbound endpoint is disabled; nothing sent", metadata: ["endpoint": "\(endpoint.id)"])
            return .success
        }
        let signer: OutboundSigner
        do {
            signer = try OutboundSigner(secrets: endpoint.secrets)
        } catch {
            throw JobError.permanent("endpoint \(endpoint.id): \(error)")
        }
        let body = Array(delivery.event.body.utf8)
        let timestamp = Int(Date().timeIntervalSince1970)
        var request: HTTPClient.Request
        do {
            request = try HTTPClient.Request(url: endpoint.url, method: .POST)
        } catch {
            throw JobError.permanent("endpoint \(endpoint.id) has a bad URL: \(error)")
        }
        request.headers.add(name: "Content-Type", value: "application/json")
        request.headers.add(name: "User-Agent", value: "Sluice-Webhooks/1")
        request.headers.add(name: "webhook-id", value: delivery.event.id)
        request.headers.add(name: "webhook-timestamp", value: "\(timestamp)")
        request.headers.add(
            name: "webhook-signature", value: signer.signature(id: delivery.event.id, timestamp: timestamp, body: body))
        request.body = .bytes(body)

        let shown = Self.redacted(endpoint.url)
        let response: StatusOnly.Response
        do {
            response = try Self.client.execute(
                request: request, delegate: StatusOnly(), deadline: .now() + .seconds(Self.requestSeconds)
            ).wait()
        } catch {
            return try failed(job, endpoint, "POST \(shown): \(error)", retryAfter: nil, store, context)
        }
        let status = response.status
        if (200..<300).contains(status) {
            try store.recordSuccess(endpoint: endpoint.id)
            Counter(label: "sluice_outbound_deliveries_total", dimensions: [("result", "delivered")]).increment()
            return .success
        }
        if status == 410 {
            if try store.disable(endpoint: endpoint.id, reason: "answered 410 Gone") {
                context.logger.warning(
                    "Outbound endpoint answered 410 Gone; disabled it",
                    metadata: ["endpoint": "\(endpoint.id)", "url": "\(shown)"])
                Counter(label: "sluice_outbound_endpoints_disabled_total", dimensions: [("reason", "gone")]).increment()
            }
            Counter(label: "sluice_outbound_deliveries_total", dimensions: [("result", "gone")]).increment()
            return .success
        }
        let retryAfter = response.retryAfter.flatMap(Double.init)
        return try failed(job, endpoint, "POST \(shown) answered \(status)", retryAfter: retryAfter, store, context)
    }

    /// An endpoint's URL for logs and errors: scheme, host, port and path, without a query or user that may
    /// carry a token.
    static func redacted(_ url: String) -> String {
        guard var components = URLComponents(string: url) else { return "(an endpoint URL)" }
        components.query = nil
        components.fragment = nil
        components.user = nil
        components.password = nil
        return components.string ?? "(an endpoint URL)"
    }

    /// Records a failed attempt and throws the retry, or ends the job when the endpoint is now disabled.
    private func failed(
        _ job: ClaimedJob, _ endpoint: OutboundStore.Endpoint, _ message: String, retryAfter: Double?,
        _ store: OutboundStore, _ context: JobContext
    ) throws -> JobOutcome {
        if try store.recordFailure(endpoint: endpoint.id, error: message) {
            context.logger.warning(
                "Outbound endpoint has failed for longer than outbound_disable_after; disabled it",
                metadata: [
                    "endpoint": "\(endpoint.id)", "url": "\(Self.redacted(endpoint.url))", "error": "\(message)",
                ])
            Counter(label: "sluice_outbound_endpoints_disabled_total", dimensions: [("reason", "failing")]).increment()
            Counter(label: "sluice_outbound_deliveries_total", dimensions: [("result", "dead")]).increment()
            return .success
        }
        Counter(
            label: "sluice_outbound_deliveries_total", dimensions: [("result", job.isLastAttempt ? "dead" : "failed")]
        ).increment()
        let schedule = try store.retrySchedule()
        let planned = schedule.isEmpty ? 60 : schedule[min(max(job.attempt, 1), schedule.count) - 1]
        let wait = max(planned, min(retryAfter ?? 0, Self.longestRetryAfter))
        throw JobError.retryable(message, after: wait)
    }
}

/// `outbound.sweep` (periodic, every minute by default): emits `access.changed` for users whose access ran
/// out with time and no event (a past-due grace period, a cancelled period's end).
public struct OutboundSweepJob: JobHandler {
    public let kind = "outbound.sweep"
    public let usesTransaction = true

    public init() {}

    public func handle(_ job: ClaimedJob, context: JobContext) throws -> JobOutcome {
        let emitted = try BillingStore(context.connection()).emitDueAccessChanges()
        if emitted > 0 { context.logger.info("Access ran out with time", metadata: ["outbound.emitted": "\(emitted)"]) }
        return .success
    }
}

/// Keeps the status and `Retry-After` of an endpoint's answer and drops its body unread: what an endpoint
/// says back means nothing here, and a large answer must cost no memory.
final class StatusOnly: HTTPClientResponseDelegate, @unchecked Sendable {
    // Safety: `head` is written in didReceiveHead and read in didFinishRequest, both on the request's event
    // loop, one after the other.
    typealias Response = (status: Int, retryAfter: String?)

    private var head: HTTPResponseHead?

    func didReceiveHead(task: HTTPClient.Task<Response>, _ head: HTTPResponseHead) -> EventLoopFuture<Void> {
        self.head = head
        return task.eventLoop.makeSucceededVoidFuture()
    }

    func didReceiveBodyPart(task: HTTPClient.Task<Response>, _ buffer: ByteBuffer) -> EventLoopFuture<Void> {
        task.eventLoop.makeSucceededVoidFuture()
    }

    func didFinishRequest(task: HTTPClient.Task<Response>) throws -> Response {
        guard let head else { throw StatusMissing() }
        return (Int(head.status.code), head.headers.first(name: "Retry-After"))
    }

    struct StatusMissing: Error, CustomStringConvertible {
        var description: String { "the endpoint closed the connection without an answer" }
    }
}
