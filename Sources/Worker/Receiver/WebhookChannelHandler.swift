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
        /// A webhook's body arriving.
        case collecting(Delivery)
        /// A webhook already answered (its body too large): the rest of its body is read and dropped.
        case discarding
        /// A webhook's whole body verified; its commit is under way.
        case committing
    }

    private struct Delivery {
        var source: WebhookSource
        var head: HTTPRequest
        var body: ByteBuffer
        var started: UInt64
    }

    /// Whether the connection closes once the current answer is written (`Connection: close`), as the
    /// router's path does.
    private var closesAfterAnswer = false

    private let receiver: WebhookReceiver
    private var state = State.idle

    init(receiver: WebhookReceiver) {
        self.receiver = receiver
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = unwrapInboundIn(data)
        switch (state, part) {
        case (.idle, .head(let head)):
            guard head.method == .post, let path = head.path, let source = receiver.source(forPath: path[...]) else {
                state = .passing
                context.fireChannelRead(data)
                return
            }
            let started = DispatchTime.now().uptimeNanoseconds
            closesAfterAnswer = Self.asksToClose(head)
            if let early = receiver.answerBeforeBody(source, contentLength: head.headerFields[.contentLength]) {
                state = .discarding
                write(early, source: source, started: started, context: context)
                return
            }
            let expected = head.headerFields[.contentLength].flatMap { Int($0) } ?? 0
            state = .collecting(
                Delivery(
                    source: source, head: head, body: context.channel.allocator.buffer(capacity: expected),
                    started: started))
        case (.passing, .end):
            state = .idle
            context.fireChannelRead(data)
        case (.passing, _):
            context.fireChannelRead(data)
        case (.collecting(var delivery), .body(var chunk)):
            guard delivery.body.readableBytes + chunk.readableBytes <= WebhookReceiver.maxBodyBytes else {
                state = .discarding
                write(
                    receiver.tooLarge(delivery.source), source: delivery.source, started: delivery.started,
                    context: context)
                return
            }
            state = .idle  // drop the reference while appending, so the buffer is not copied
            delivery.body.writeBuffer(&chunk)
            state = .collecting(delivery)
        case (.collecting(let delivery), .end):
            state = .committing
            commit(delivery, context: context)
        case (.discarding, .end):
            state = .idle
        case (.discarding, _):
            return
        case (.collecting, .head), (.committing, _), (.idle, _):
            // The pipeline handler delivers one request at a time; anything else is a broken connection.
            context.close(promise: nil)
        }
    }

    private func commit(_ delivery: Delivery, context: ChannelHandlerContext) {
        let body = Array(delivery.body.readableBytesView)
        let fields = delivery.head.headerFields
        let verified = receiver.verify(delivery.source, body: body) { name in
            HTTPField.Name(name).flatMap { fields[$0] }
        }
        switch verified {
        case .failure(let refusal):
            state = .idle
            write(refusal, source: delivery.source, started: delivery.started, context: context)
        case .success(let verified):
            let receiver = self.receiver
            let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            receiver.committer.submit(verified.job) { result in
                let answer = receiver.answer(verified, committed: result)
                bound.eventLoop.execute {
                    let (handler, context) = bound.value
                    guard case .committing = handler.state else { return }
                    handler.state = .idle
                    handler.write(answer, source: delivery.source, started: delivery.started, context: context)
                }
            }
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
        if closesAfterAnswer {
            context.writeAndFlush(wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in
                context.close(promise: nil)
            }
        } else {
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        }
    }

    private static func asksToClose(_ head: HTTPRequest) -> Bool {
        guard let connection = head.headerFields[.connection] else { return false }
        return connection.split(separator: ",").contains {
            $0.trimmingCharacters(in: .whitespaces).lowercased() == "close"
        }
    }
}
