import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdCore
import Jobs
import Logging
import Metrics
import NIOCore
import PGQueue

/// `POST /webhooks/<source>` (stripe, clerk) on the public address.
///
/// Its one job: prove a delivery genuine on its raw bytes, commit it to the queue, answer. `200` only
/// after the row is committed (also for a redelivery, and for an event type no handler wants: a 4xx for a
/// genuine event makes Stripe disable the endpoint); `400` for a bad or missing signature, a stale
/// timestamp or a body that is not a JSON event; `413` above 1 MiB; `503` when the database cannot take
/// the row, so the sender retries; `404` for a source without a configured secret. Logs carry the event
/// id, type and outcome, never a secret, a signature or the body.
struct WebhookReceiver: Sendable {
    static let maxBodyBytes = 1 << 20

    /// Every source this build knows has a route; one without a verifier (no secret) answers 404.
    let sources: [WebhookSource]
    let verifiers: WebhookVerifiers
    let committer: GroupCommitter
    let metrics: SluiceMetrics
    let logger: Logger

    /// Adds `POST /webhooks/<source>` for every source.
    func addRoutes(to router: Router<BasicRequestContext>) {
        for source in sources {
            router.post(RouterPath(source.path)) { request, _ -> Response in
                await receive(source, request)
            }
        }
    }

    private func receive(_ source: WebhookSource, _ request: Request) async -> Response {
        let started = DispatchTime.now().uptimeNanoseconds
        let (outcome, response) = await answer(source, request)
        metrics.webhook(source: source, outcome: outcome)
        metrics.webhookDuration(source: source).recordNanoseconds(
            Int64(DispatchTime.now().uptimeNanoseconds - started))
        return response
    }

    private func answer(_ source: WebhookSource, _ request: Request) async -> (WebhookOutcome, Response) {
        guard let verifier = verifiers[source] else { return notConfigured(source) }
        if let length = request.headers[.contentLength].flatMap({ Int($0) }), length > Self.maxBodyBytes {
            return tooLarge(source)
        }
        let body: [UInt8]
        do {
            body = Array(try await request.body.collect(upTo: Self.maxBodyBytes).readableBytesView)
        } catch is NIOTooManyBytesError {
            return tooLarge(source)
        } catch {
            return reject(source, .malformed("the request body could not be read: \(error)"))
        }

        let receivedAt = Date()
        let delivery: VerifiedDelivery
        do throws(WebhookRejection) {
            delivery = try verifier.verify(
                body: body, header: { name in HTTPField.Name(name).flatMap { request.headers[$0] } },
                now: Int(receivedAt.timeIntervalSince1970))
        } catch {
            return reject(source, error)
        }

        let payload = WebhookJobPayload.make(
            source: source, eventID: delivery.eventID, type: delivery.type, receivedAt: receivedAt,
            headers: delivery.headers, body: body)
        let job = NewJob(
            kind: source.jobKind, payload: payload, queue: WebhookSource.queue,
            uniqueKey: source.uniqueKey(delivery.eventID))
        var metadata: Logger.Metadata = [
            "webhook.source": "\(source.name)", "event.id": "\(delivery.eventID)", "event.type": "\(delivery.type)",
        ]
        switch await committer.submit(job) {
        case .enqueued(let id):
            metadata["job.id"] = "\(id)"
            logger.info("Webhook accepted", metadata: metadata)
            return (.accepted, Self.text(.ok, "accepted"))
        case .duplicate(let id):
            metadata["job.id"] = "\(id)"
            logger.info("Webhook already received; absorbed", metadata: metadata)
            return (.duplicate, Self.text(.ok, "already received"))
        case .unavailable(let reason):
            // The committer logs the cause once per outage; one line per request would flood the journal.
            metadata["reason"] = "\(reason)"
            logger.debug("Webhook not committed; answering 503", metadata: metadata)
            var response = Self.text(.serviceUnavailable, "the queue's database is unavailable; retry later")
            response.headers[.retryAfter] = "5"
            return (.unavailable, response)
        }
    }

    private func notConfigured(_ source: WebhookSource) -> (WebhookOutcome, Response) {
        (.notConfigured, Self.text(.notFound, "no \(source.name) webhooks are received here"))
    }

    private func tooLarge(_ source: WebhookSource) -> (WebhookOutcome, Response) {
        logger.warning(
            "Webhook refused", metadata: ["webhook.source": "\(source.name)", "webhook.outcome": "too_large"])
        return (.tooLarge, Self.text(.contentTooLarge, "the body is larger than \(Self.maxBodyBytes) bytes"))
    }

    private func reject(_ source: WebhookSource, _ rejection: WebhookRejection) -> (WebhookOutcome, Response) {
        logger.warning(
            "Webhook refused",
            metadata: [
                "webhook.source": "\(source.name)", "webhook.outcome": "\(rejection.outcome.rawValue)",
                "reason": "\(rejection)",
            ])
        let outcome: WebhookOutcome =
            switch rejection.outcome {
            case .badSignature: .badSignature
            case .stale: .stale
            case .malformed: .malformed
            }
        return (outcome, Self.text(.badRequest, rejection.reason))
    }

    private static func text(_ status: HTTPResponse.Status, _ message: String) -> Response {
        Response(
            status: status, headers: [.contentType: "text/plain; charset=utf-8"],
            body: .init(byteBuffer: ByteBuffer(string: message + "\n")))
    }
}
