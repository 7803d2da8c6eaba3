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
/// id, type and outcome, never a secret, a signature or the body, and a few lines of each kind at most
/// every ten seconds (``LogBudget``): the sender chooses how many requests come.
///
/// The decisions are here, apart from the transport: ``WebhookChannelHandler`` runs them on the event
/// loop for the public server, and ``addRoutes(to:)`` through Hummingbird's router for any request that
/// handler passes on.
struct WebhookReceiver: Sendable {
    static let maxBodyBytes = 1 << 20

    /// Every source this build knows has a route; one without a verifier (no secret) answers 404.
    let sources: [WebhookSource]
    let verifiers: WebhookVerifiers
    let committer: GroupCommitter
    let metrics: SluiceMetrics
    let logger: Logger
    /// Lines per source and outcome every ten seconds: enough to follow a normal day's events one by one,
    /// and to see a forged delivery, without a burst or an attack writing a line per request.
    let accepted: LogBudget<LogKind>
    let refused: LogBudget<LogKind>

    /// What a budgeted line is about: never request data, so the kinds stay few.
    struct LogKind: Hashable, Sendable {
        var source: String
        var outcome: WebhookOutcome
    }

    init(
        sources: [WebhookSource], verifiers: WebhookVerifiers, committer: GroupCommitter, metrics: SluiceMetrics,
        logger: Logger
    ) {
        self.sources = sources
        self.verifiers = verifiers
        self.committer = committer
        self.metrics = metrics
        self.logger = logger
        let skipped: @Sendable (Logger.Level) -> @Sendable (LogKind, Int) -> Void = { level in
            { kind, count in
                logger.log(
                    level: level, "Webhook lines skipped",
                    metadata: [
                        "webhook.source": "\(kind.source)", "webhook.outcome": "\(kind.outcome.rawValue)",
                        "log.skipped": "\(count)",
                    ])
            }
        }
        accepted = LogBudget(linesPerWindow: 50, report: skipped(.info))
        refused = LogBudget(linesPerWindow: 5, report: skipped(.warning))
    }

    /// A delivery that passed every check and waits for its commit.
    struct Verified: Sendable {
        var source: WebhookSource
        var job: NewJob
        var metadata: Logger.Metadata
    }

    /// Adds `POST /webhooks/<source>` for every source.
    func addRoutes(to router: Router<BasicRequestContext>) {
        for source in sources {
            router.post(RouterPath(source.path)) { request, _ -> Response in
                await receive(source, request)
            }
        }
    }

    /// The source whose route `path` (query and all) names exactly, if any.
    func source(forPath path: Substring) -> WebhookSource? {
        let route = path.prefix { $0 != "?" }
        return sources.first { route.elementsEqual($0.path) }
    }

    /// The answer known from the head alone: no secret for the source, or a declared body too large.
    func answerBeforeBody(_ source: WebhookSource, contentLength: String?) -> WebhookAnswer? {
        guard verifiers[source] != nil else { return notConfigured(source) }
        if let contentLength, let length = Int(contentLength), length > Self.maxBodyBytes { return tooLarge(source) }
        return nil
    }

    /// Verifies a whole body: the job to commit, or the answer refusing it.
    func verify(_ source: WebhookSource, body: [UInt8], header: (String) -> String?) -> Result<Verified, WebhookAnswer>
    {
        guard let verifier = verifiers[source] else { return .failure(notConfigured(source)) }
        let receivedAt = Date()
        let delivery: VerifiedDelivery
        do throws(WebhookRejection) {
            delivery = try verifier.verify(body: body, header: header, now: Int(receivedAt.timeIntervalSince1970))
        } catch {
            return .failure(reject(source, error))
        }
        let payload = WebhookJobPayload.make(
            source: source, eventID: delivery.eventID, type: delivery.type, receivedAt: receivedAt,
            headers: delivery.headers, body: body)
        let job = NewJob(
            kind: source.jobKind, payload: payload, queue: WebhookSource.queue,
            uniqueKey: source.uniqueKey(delivery.eventID))
        let metadata: Logger.Metadata = [
            "webhook.source": "\(source.name)", "event.id": "\(delivery.eventID)", "event.type": "\(delivery.type)",
        ]
        return .success(Verified(source: source, job: job, metadata: metadata))
    }

    /// The answer once the committer has decided, logged.
    func answer(_ verified: Verified, committed result: GroupCommitter.Result) -> WebhookAnswer {
        var metadata = verified.metadata
        switch result {
        case .enqueued(let id):
            if accepted.admit(LogKind(source: verified.source.name, outcome: .accepted), on: logger) {
                metadata["job.id"] = "\(id)"
                logger.info("Webhook accepted", metadata: metadata)
            }
            return WebhookAnswer(outcome: .accepted, status: .ok, message: "accepted")
        case .duplicate(let id):
            if accepted.admit(LogKind(source: verified.source.name, outcome: .duplicate), on: logger) {
                metadata["job.id"] = "\(id)"
                logger.info("Webhook already received; absorbed", metadata: metadata)
            }
            return WebhookAnswer(outcome: .duplicate, status: .ok, message: "already received")
        case .unavailable(let reason):
            // The committer logs the cause once per outage; one line per request would flood the journal.
            metadata["reason"] = "\(reason)"
            logger.debug("Webhook not committed; answering 503", metadata: metadata)
            return WebhookAnswer(
                outcome: .unavailable, status: .serviceUnavailable,
                message: "the queue's database is unavailable; retry later", retryAfter: "5")
        }
    }

    /// Counts the answer and times the request from `started` (`DispatchTime` nanoseconds).
    func record(_ answer: WebhookAnswer, source: WebhookSource, started: UInt64) {
        metrics.webhook(source: source, outcome: answer.outcome)
        metrics.webhookDuration(source: source).recordNanoseconds(
            Int64(DispatchTime.now().uptimeNanoseconds - started))
    }

    /// A body that could not be read whole.
    func unreadable(_ source: WebhookSource, _ error: any Error) -> WebhookAnswer {
        reject(source, .malformed("the request body could not be read: \(error)"))
    }

    func tooLarge(_ source: WebhookSource) -> WebhookAnswer {
        logRefusal(source, outcome: .tooLarge, metadata: [:])
        return WebhookAnswer(
            outcome: .tooLarge, status: .contentTooLarge, message: "the body is larger than \(Self.maxBodyBytes) bytes")
    }

    private func notConfigured(_ source: WebhookSource) -> WebhookAnswer {
        WebhookAnswer(
            outcome: .notConfigured, status: .notFound, message: "no \(source.name) webhooks are received here")
    }

    private func reject(_ source: WebhookSource, _ rejection: WebhookRejection) -> WebhookAnswer {
        let outcome: WebhookOutcome =
            switch rejection.outcome {
            case .badSignature: .badSignature
            case .stale: .stale
            case .malformed: .malformed
            }
        logRefusal(source, outcome: outcome, metadata: ["reason": "\(rejection)"])
        return WebhookAnswer(outcome: outcome, status: .badRequest, message: rejection.reason)
    }

    /// One `Webhook refused` line, within the refusals' budget for the source and outcome.
    private func logRefusal(_ source: WebhookSource, outcome: WebhookOutcome, metadata: Logger.Metadata) {
        guard refused.admit(LogKind(source: source.name, outcome: outcome), on: logger) else { return }
        var metadata = metadata
        metadata["webhook.source"] = "\(source.name)"
        metadata["webhook.outcome"] = "\(outcome.rawValue)"
        logger.warning("Webhook refused", metadata: metadata)
    }

    // MARK: Through the router

    private func receive(_ source: WebhookSource, _ request: Request) async -> Response {
        let started = DispatchTime.now().uptimeNanoseconds
        let answer = await answer(source, request)
        record(answer, source: source, started: started)
        return answer.response
    }

    private func answer(_ source: WebhookSource, _ request: Request) async -> WebhookAnswer {
        if let early = answerBeforeBody(source, contentLength: request.headers[.contentLength]) { return early }
        let body: [UInt8]
        do {
            body = Array(try await request.body.collect(upTo: Self.maxBodyBytes).readableBytesView)
        } catch is NIOTooManyBytesError {
            return tooLarge(source)
        } catch {
            return unreadable(source, error)
        }
        switch verify(source, body: body, header: { name in HTTPField.Name(name).flatMap { request.headers[$0] } }) {
        case .failure(let refusal): return refusal
        case .success(let verified): return answer(verified, committed: await committer.submit(verified.job))
        }
    }
}

/// What the receiver answers one request: a short text body, with `Retry-After` when the sender should
/// come back.
struct WebhookAnswer: Error, Sendable {
    var outcome: WebhookOutcome
    var status: HTTPResponse.Status
    var message: String
    var retryAfter: String?

    var headers: HTTPFields {
        var headers: HTTPFields = [.contentType: "text/plain; charset=utf-8"]
        if let retryAfter { headers[.retryAfter] = retryAfter }
        return headers
    }

    var body: ByteBuffer { ByteBuffer(string: message + "\n") }

    var response: Response {
        Response(status: status, headers: headers, body: .init(byteBuffer: body))
    }
}
