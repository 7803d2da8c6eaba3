import Dispatch
import Foundation
import HTTPTypes
import Jobs
import NIOCore
import NIOHTTPTypes

/// Answers `POST /webhooks/<source>` inside the connection's channel pipeline; every other request goes on
/// to Hummingbird's router unchanged.
///
/// The receiver's work per request is small (an HMAC and a scan of the body), so the hops the router
/// takes (from the event loop to a task, through an async body stream, and back to write the answer) were
/// most of its cost. Here the body is gathered and verified on the event loop, and the group committer
/// answers through one hop back to it. The decisions are ``WebhookReceiver``'s, shared with the router's
/// route. The pipeline serialises requests (`HTTPServerPipelineHandler`), so a connection's next request
/// reaches this handler only once the current answer is written.
final class WebhookChannelHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundOut = HTTPResponsePart

    private enum State {
        /// Between requests.
        case idle
        /// A request for the router, passed on part by part until its end.
        case passing
        /// A webhook's body arriving (into `body`).
        case collecting(Delivery)
        /// A webhook already answered (404, or its body too large): the rest of its body is read and
        /// dropped, up to `maxDiscardBytes`, then the connection closes.
        case discarding(dropped: Int)
        /// A webhook's whole body verified; its commit is under way.
        case committing
        /// The answer to a `Connection: close` request is written or on its way: nothing more is read.
        case closing
    }

    private struct Delivery {
        var source: WebhookSource
        var head: HTTPRequest
        var started: UInt64
    }

    /// A sender that keeps uploading after its refusal is cut off after this much more.
    static let maxDiscardBytes = 4 << 20
    /// The body buffer starts at most this large, whatever `Content-Length` claims, and grows as bytes come.
    static let initialBodyCapacity = 64 << 10

    private let receiver: WebhookReceiver
    private var state = State.idle
    /// The body of the delivery being collected. Kept outside `state` so appending never copies it: a
    /// value held by the enum and a `switch` over it has two owners.
    private var body: ByteBuffer?
    /// Whether the connection closes once the current answer is written (`Connection: close`, or a
    /// request refused before its body was read).
    private var closesAfterAnswer = false
    /// The peer half-closed while its answer was pending: passed on once the answer is written, so the
    /// router's side does not close the channel under it.
    private var heldInputClosed = false

    init(receiver: WebhookReceiver) {
        self.receiver = receiver
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = unwrapInboundIn(data)
        switch part {
        case .head(let head):
            guard case .idle = state else {
                if case .passing = state { return context.fireChannelRead(data) }
                if case .closing = state { return }
                // The pipeline handler delivers one request at a time; anything else is a broken connection.
                return context.close(promise: nil)
            }
            begin(head, data: data, context: context)
        case .body(var chunk):
            switch state {
            case .passing:
                context.fireChannelRead(data)
            case .collecting(let delivery):
                guard var collected = body else { return }
                guard collected.readableBytes + chunk.readableBytes <= WebhookReceiver.maxBodyBytes else {
                    body = nil
                    state = .discarding(dropped: 0)
                    closesAfterAnswer = true
                    write(
                        receiver.tooLarge(delivery.source), source: delivery.source, started: delivery.started,
                        context: context)
                    return
                }
                body = nil  // one owner while appending, so the buffer grows in place
                collected.writeBuffer(&chunk)
                body = collected
            case .discarding(let dropped):
                let total = dropped + chunk.readableBytes
                guard total <= Self.maxDiscardBytes else {
                    state = .closing
                    return context.close(promise: nil)
                }
                state = .discarding(dropped: total)
            case .idle, .committing:
                context.close(promise: nil)
            case .closing:
                return
            }
        case .end:
            switch state {
            case .passing:
                state = .idle
                context.fireChannelRead(data)
            case .collecting(let delivery):
                let collected = body ?? ByteBuffer()
                body = nil
                state = .committing
                commit(delivery, body: collected, context: context)
            case .discarding:
                // Refused before its body was read: the connection closes now that the body is through.
                state = .closing
                context.close(promise: nil)
            case .idle, .committing:
                context.close(promise: nil)
            case .closing:
                return
            }
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case .inputClosed = event as? ChannelEvent {
            switch state {
            case .collecting, .committing:
                heldInputClosed = true
                return
            case .discarding:
                // Answered already, and the rest of the body will never come.
                state = .closing
                context.close(promise: nil)
                return
            case .idle, .passing, .closing:
                break
            }
        }
        context.fireUserInboundEventTriggered(event)
    }

    private func begin(_ head: HTTPRequest, data: NIOAny, context: ChannelHandlerContext) {
        guard head.method == .post, let path = head.path, let source = receiver.source(forPath: path[...]) else {
            state = .passing
            context.fireChannelRead(data)
            return
        }
        let started = DispatchTime.now().uptimeNanoseconds
        closesAfterAnswer = Self.asksToClose(head)
        if let early = receiver.answerBeforeBody(source, contentLength: head.headerFields[.contentLength]) {
            state = .discarding(dropped: 0)
            closesAfterAnswer = true
            write(early, source: source, started: started, context: context)
            return
        }
        let expected = head.headerFields[.contentLength].flatMap { Int($0) } ?? 0
        body = context.channel.allocator.buffer(capacity: min(max(expected, 0), Self.initialBodyCapacity))
        state = .collecting(Delivery(source: source, head: head, started: started))
    }

    private func commit(_ delivery: Delivery, body: ByteBuffer, context: ChannelHandlerContext) {
        let bytes = Array(body.readableBytesView)
        let fields = delivery.head.headerFields
        let verified = receiver.verify(delivery.source, body: bytes) { name in
            HTTPField.Name(name).flatMap { fields[$0] }
        }
        switch verified {
        case .failure(let refusal):
            finishAnswer(refusal, source: delivery.source, started: delivery.started, context: context)
        case .success(let verified):
            // The callback keeps what the answer needs, not the body.
            let receiver = self.receiver
            let source = delivery.source
            let started = delivery.started
            let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            receiver.committer.submit(verified.job) { result in
                let answer = receiver.answer(verified, committed: result)
                bound.eventLoop.execute {
                    let (handler, context) = bound.value
                    guard case .committing = handler.state else { return }
                    handler.finishAnswer(answer, source: source, started: started, context: context)
                }
            }
        }
    }

    /// Writes the answer to a whole request and readies the handler for the next one.
    private func finishAnswer(
        _ answer: WebhookAnswer, source: WebhookSource, started: UInt64, context: ChannelHandlerContext
    ) {
        state = closesAfterAnswer ? .closing : .idle
        write(answer, source: source, started: started, context: context)
        if heldInputClosed {
            heldInputClosed = false
            context.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        }
    }

    private func write(_ answer: WebhookAnswer, source: WebhookSource, started: UInt64, context: ChannelHandlerContext)
    {
        receiver.record(answer, source: source, started: started)
        let body = answer.body
        var head = HTTPResponse(status: answer.status, headerFields: answer.headers)
        head.headerFields[.contentLength] = String(body.readableBytes)
        head.headerFields[.server] = "sluice"
        if closesAfterAnswer { head.headerFields[.connection] = "close" }
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        context.write(wrapOutboundOut(.body(body)), promise: nil)
        guard closesAfterAnswer, case .closing = state else {
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
            return
        }
        // Output only: closing both ways with the sender's next request unread would reset the connection,
        // and a reset can throw away the answer before the sender reads it. What still arrives is dropped;
        // the router's side closes the channel when the sender closes its end, or the idle timeout does.
        context.writeAndFlush(wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in
            context.close(mode: .output, promise: nil)
        }
    }

    private static func asksToClose(_ head: HTTPRequest) -> Bool {
        guard let connection = head.headerFields[.connection] else { return false }
        return connection.split(separator: ",").contains {
            $0.trimmingCharacters(in: .whitespaces).lowercased() == "close"
        }
    }
}
