import HTTPTypes
import HummingbirdCore
import Logging
import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import NIOHTTPTypesHTTP1

/// The public server's HTTP/1.1 connections: Hummingbird's own pipeline, with the webhook routes answered
/// in the pipeline itself (``WebhookChannelHandler``) ahead of the router.
///
/// It differs from `HTTP1Channel` in two ways: the webhook handler, and NIO's pipelining assistance, which
/// makes a pipelined request wait until the answer to the one before it is written, whichever of the
/// two answered it.
struct PublicHTTPChannel: HTTPChannelHandler {
    typealias Value = NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>

    let responder: HTTPChannelHandler.Responder
    /// Connections that send nothing for this long are closed, including ones stalled mid-request.
    let idleTimeout: Duration
    let decoderLimits: NIOHTTPDecoderLimitConfiguration
    let webhooks: WebhookReceiver?

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        channel.eventLoop.makeCompletedFuture {
            let pipeline = channel.pipeline.syncOperations
            try pipeline.configureHTTPServerPipeline(
                withPipeliningAssistance: true,
                withErrorHandling: false,  // Hummingbird answers parse errors
                withOutboundHeaderValidation: false,  // HTTPTypes validates fields already
                withEncoderConfiguration: .init(),
                withDecoderLimitConfiguration: decoderLimits
            )
            try pipeline.addHandler(HTTP1ToHTTPServerCodec(secure: false))
            try pipeline.addHandler(HTTPConnectionStateHandler(idleTimeout: idleTimeout, logger: logger))
            if let webhooks { try pipeline.addHandler(WebhookChannelHandler(receiver: webhooks)) }
            return try NIOAsyncChannel(
                wrappingChannelSynchronously: channel, configuration: .init(isOutboundHalfClosureEnabled: true))
        }
    }

    func handle(value: Value, logger: Logger) async {
        await handleHTTP(asyncChannel: value, logger: logger)
    }
}
