import Crypto
import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import PGQueue
import Synchronization
import TestKit

/// Outbound deliveries through the real `sluice work` (queue `outbound`, concurrency 10) to an endpoint in
/// this process, beside `wrk` posting the same signed body to the same endpoint over as many connections
/// (the ceiling), and the delay from each causing transaction's commit to its delivery.
enum OutboundDeliveries {
    struct Figures {
        var deliveriesPerSecond: Double
        var ceiling: Double
        /// Milliseconds from the emitting transaction to the endpoint's receipt, for a steady trickle.
        var delays: [Double]
        var events: Int
    }

    static let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

    static func run(binary: String, database: BenchDatabase, settings: Settings, on connection: PostgresConnection)
        throws -> Figures
    {
        let endpoint = try Endpoint()
        defer { endpoint.stop() }
        try connection.run(
            script: """
                DELETE FROM sluice.outbound_endpoints;
                INSERT INTO sluice.outbound_endpoints (url, secret) VALUES ('http://127.0.0.1:\(endpoint.port)/hooks', '\(secret)');
                """, context: "the bench endpoint")

        // A backlog, emitted in one transaction, drained by the worker.
        let count = settings.outboundEvents
        try connection.run(
            script: """
                SELECT billing.emit('access.changed', now(),
                                    jsonb_build_object('user_id', 'user_' || n, 'has_access', true, 'version', 1),
                                    'user_' || n, 'bench:' || n)
                FROM generate_series(1, \(count)) n;
                """, context: "emitting \(count) events")
        endpoint.reset()
        let worker = try ChildProcess(
            path: binary, arguments: ["work"],
            environment: ChildProcess.inheriting([
                "DATABASE_URL": database.url, "SLUICE_QUEUES": "outbound:10", "SLUICE_ADMIN_LISTEN": "off",
                "SLUICE_PERIODIC": "off", "SLUICE_LOG_LEVEL": "warning",
            ]),
            outputPath: NSTemporaryDirectory() + "sluice-outbound-bench.log")
        defer { worker.stop() }
        let started = ContinuousClock.now
        while endpoint.received < count {
            guard (ContinuousClock.now - started) < .seconds(300) else {
                throw BenchFailure("only \(endpoint.received) of \(count) deliveries arrived in 5 minutes")
            }
            usleep(2_000)
        }
        let rate = Double(count) / (ContinuousClock.now - started).seconds

        // A steady trickle, one event a transaction every 5 ms: commit to receipt.
        endpoint.reset()
        let trickle = min(1_000, count)
        var emitted: [String: Date] = [:]
        for n in 0..<trickle {
            let id = try connection.query(
                """
                SELECT billing.emit('access.changed', now(), jsonb_build_object('user_id', 'trickle_' || $1::text),
                                    'trickle_' || $1::text, 'bench-trickle:' || $1::text)
                """, ["\(n)"], context: "emitting one event"
            ).single().decode(String.self, at: 0)
            emitted[id] = Date()
            usleep(5_000)
        }
        while endpoint.received < trickle {
            guard (ContinuousClock.now - started) < .seconds(600) else {
                throw BenchFailure("the trickle's deliveries did not all arrive")
            }
            usleep(2_000)
        }
        let arrivals = endpoint.arrivals
        let delays = emitted.compactMap { id, at in arrivals[id].map { $0.timeIntervalSince(at) * 1000 } }

        // The ceiling: wrk posting the same signed body to the same endpoint, 10 connections.
        let body =
            #"{"id":"evt_bench","type":"access.changed","occurred_at":"2026-12-03T00:00:00Z","data":{"user_id":"user_1"}}"#
        let timestamp = Int(Date().timeIntervalSince1970)
        let key = SymmetricKey(data: Data(base64Encoded: String(secret.dropFirst("whsec_".count)))!)
        let signature =
            "v1,"
            + Data(HMAC<SHA256>.authenticationCode(for: Data("evt_bench.\(timestamp).\(body)".utf8), using: key))
            .base64EncodedString()
        let wrk = try ChildProcess.run(
            "wrk",
            [
                "-t2", "-c10", "-d\(settings.outboundSeconds)s", "--latency", "-s",
                WebhookIngest.repositoryRoot.appendingPathComponent("Benchmarks/wrk/post-signed.lua").path,
                "http://127.0.0.1:\(endpoint.port)/hooks",
            ],
            environment: [
                "SLUICE_BENCH_BODY": body, "SLUICE_BENCH_ID": "evt_bench", "SLUICE_BENCH_TIMESTAMP": "\(timestamp)",
                "SLUICE_BENCH_SIGNATURE": signature,
            ])
        guard wrk.status == 0 else { throw BenchFailure("wrk failed:\n\(wrk.output)") }
        let ceiling = try WrkReport(wrk.output).requestsPerSecond
        return Figures(deliveriesPerSecond: rate, ceiling: ceiling, delays: delays, events: count)
    }

    /// An HTTP/1.1 server on NIO that answers every request 200 and notes when each `webhook-id` arrived.
    final class Endpoint: Sendable {
        let port: Int
        private let group: MultiThreadedEventLoopGroup
        private let channel: any Channel
        private let state: Box<(received: Int, arrivals: [String: Date])>

        init() throws {
            let state = Box<(received: Int, arrivals: [String: Date])>((0, [:]))
            self.state = state
            group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
            channel = try ServerBootstrap(group: group)
                .serverChannelOption(.backlog, value: 256)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelInitializer { channel in
                    channel.pipeline.configureHTTPServerPipeline().flatMap {
                        channel.pipeline.addHandler(Answer(state: state))
                    }
                }
                .bind(host: "127.0.0.1", port: 0).wait()
            port = channel.localAddress?.port ?? 0
        }

        var received: Int { state.value.withLock { $0.received } }
        var arrivals: [String: Date] { state.value.withLock { $0.arrivals } }

        func reset() { state.value.withLock { $0 = (0, [:]) } }

        func stop() {
            try? channel.close().wait()
            try? group.syncShutdownGracefully()
        }

        private final class Answer: ChannelInboundHandler, @unchecked Sendable {
            // Safety: `id` is read and written only on the channel's event loop; `state` is a Mutex.
            typealias InboundIn = HTTPServerRequestPart
            typealias OutboundOut = HTTPServerResponsePart
            let state: Box<(received: Int, arrivals: [String: Date])>
            var id: String?

            init(state: Box<(received: Int, arrivals: [String: Date])>) { self.state = state }

            func channelRead(context: ChannelHandlerContext, data: NIOAny) {
                switch unwrapInboundIn(data) {
                case .head(let head): id = head.headers.first(name: "webhook-id")
                case .body: break
                case .end:
                    let now = Date()
                    let id = self.id
                    state.value.withLock { state in
                        state.received += 1
                        if let id, id != "evt_bench" { state.arrivals[id] = now }
                    }
                    var headers = HTTPHeaders()
                    headers.add(name: "Content-Length", value: "2")
                    context.write(
                        wrapOutboundOut(.head(.init(version: .http1_1, status: .ok, headers: headers))), promise: nil)
                    context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: "ok")))), promise: nil)
                    context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
                }
            }
        }
    }
}
