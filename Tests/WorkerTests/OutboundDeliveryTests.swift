import Crypto
import Foundation
import PGQueue
import TestKit
import Testing

/// Outbound events delivered by the real `sluice work` to an endpoint in the test (`FakeStripe` on
/// `/hooks`), which checks every signature with its own Standard Webhooks verifier.
@Suite("outbound deliveries", .serialized)
struct OutboundDeliveryTests {
    static let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

    /// The test's own verifier, apart from the server's signer: true when a `v1` entry is the HMAC-SHA256 of
    /// "id.timestamp.body" keyed with the secret's base64-decoded part.
    static func verifies(_ request: FakeStripe.Received, secret: String = secret) -> Bool {
        guard let id = request.headers["webhook-id"], let timestamp = request.headers["webhook-timestamp"],
            let signatures = request.headers["webhook-signature"],
            let key = Data(base64Encoded: String(secret.dropFirst("whsec_".count)))
        else { return false }
        let mac = HMAC<SHA256>.authenticationCode(
            for: Data("\(id).\(timestamp).\(request.body)".utf8), using: SymmetricKey(data: key))
        let expected = "v1," + Data(mac).base64EncodedString()
        return signatures.split(separator: " ").contains { $0 == expected }
    }

    @Test("the verifier here passes the Standard Webhooks test vector")
    func vector() {
        let request = FakeStripe.Received(
            method: "POST", path: "/hooks",
            headers: [
                "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek", "webhook-timestamp": "1614265330",
                "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
            ], form: [:], at: Date(), body: #"{"test": 2432232314}"#)
        #expect(Self.verifies(request))
        var forged = request
        forged.body = #"{"test": 2432232315}"#
        #expect(!Self.verifies(forged))
    }

    /// A database with one endpoint on `stripe`'s `/hooks` and a fast retry schedule, and one event emitted.
    func setUp(_ path: String = "/hooks", attempts: Int = 14) throws -> (BillingRun, FakeStripe, String) {
        let run = try BillingRun()
        let stripe = try FakeStripe()
        let connection = try run.connect()
        try connection.run(
            script: """
                INSERT INTO sluice.outbound_endpoints (url, secret) VALUES ('\(stripe.url)\(path)', '\(Self.secret)');
                UPDATE sluice.settings SET value = '0.2 seconds' WHERE key = 'outbound_retry_schedule';
                UPDATE sluice.kinds SET max_attempts = \(attempts) WHERE kind = 'outbound.deliver';
                """, context: "an endpoint")
        let id = try #require(
            try connection.firstValue(
                """
                SELECT billing.emit('access.changed', now(), '{"user_id": "user_1", "has_access": true, "version": 1}',
                                    'user_1', 'test:1')
                """))
        return (run, stripe, id)
    }

    static let outbound = ["SLUICE_QUEUES": "outbound:2"]

    @Test("500 then 200 ends in one accepted delivery, both attempts with the same webhook-id and good signatures")
    func retriedOnce() throws {
        let (run, stripe, id) = try setUp()
        stripe.script("POST", "/hooks", [.init(status: 500, body: "down")])
        try run.process([], environment: Self.outbound)
        let posts = stripe.received.filter { $0.path == "/hooks" }
        #expect(posts.count == 2)
        #expect(posts.allSatisfy { $0.headers["webhook-id"] == id && Self.verifies($0) }, "\(posts.map(\.headers))")
        let body = try #require(try JSONSerialization.jsonObject(with: Data(posts[1].body.utf8)) as? [String: Any])
        #expect(body["id"] as? String == id && body["type"] as? String == "access.changed")
        let connection = try run.connect()
        #expect(
            try connection.firstValue(
                "SELECT (last_success_at IS NOT NULL AND failing_since IS NULL)::text FROM sluice.outbound_endpoints")
                == "true")
        #expect(try connection.firstValue("SELECT count(*)::text FROM sluice.dead_letters") == "0")
    }

    @Test("an endpoint that always fails ends in a dead letter after the kind's attempts; a redirect is a failure")
    func alwaysFails() throws {
        // A token in the endpoint's query must not reach logs, last_error or the dead letter.
        let (run, stripe, _) = try setUp("/hooks?token=s3cr3t", attempts: 3)
        stripe.script(
            "POST", "/hooks",
            [
                .init(status: 503, body: "", headers: ["Retry-After": "0"]),
                .init(status: 302, body: "", headers: ["Location": "http://127.0.0.1:9/elsewhere"]),
                .init(status: 500, body: ""),
            ])
        try run.process([], environment: Self.outbound)
        #expect(stripe.received.filter { $0.path == "/hooks" }.count == 3)
        #expect(stripe.received.allSatisfy { $0.path == "/hooks" }, "the redirect was not followed")
        let connection = try run.connect()
        #expect(
            try connection.firstValue("SELECT kind || ' ' || attempt FROM sluice.dead_letters")
                == "outbound.deliver 3")
        #expect(
            try connection.firstValue(
                "SELECT (errors::text || last_error) FROM sluice.dead_letters, sluice.outbound_endpoints")?
                .contains("s3cr3t") == false)
        #expect(
            try connection.firstValue(
                "SELECT (failing_since IS NOT NULL AND enabled)::text FROM sluice.outbound_endpoints")
                == "true", "failing, not yet for outbound_disable_after")
    }

    @Test("410 Gone disables the endpoint: no retry, and later events are not queued for it")
    func gone() throws {
        let (run, stripe, _) = try setUp()
        stripe.script("POST", "/hooks", [.init(status: 410, body: "")])
        try run.process([], environment: Self.outbound)
        #expect(stripe.received.filter { $0.path == "/hooks" }.count == 1)
        let connection = try run.connect()
        #expect(
            try connection.firstValue("SELECT enabled::text || ' ' || disabled_reason FROM sluice.outbound_endpoints")
                == "false answered 410 Gone")
        _ = try connection.firstValue(
            "SELECT billing.emit('access.changed', now(), '{\"user_id\": \"user_1\"}', 'user_1', 'test:2')")
        #expect(try connection.firstValue("SELECT count(*)::text FROM sluice.jobs WHERE queue = 'outbound'") == "0")
    }

    @Test("an endpoint failing longer than outbound_disable_after is disabled")
    func failingTooLong() throws {
        let (run, stripe, _) = try setUp()
        try run.connect().run(
            script: """
                UPDATE sluice.outbound_endpoints SET failing_since = now() - interval '6 days';
                """, context: "failing for days")
        stripe.script("POST", "/hooks", [.init(status: 500, body: "")])
        try run.process([], environment: Self.outbound)
        #expect(
            try run.connect().firstValue("SELECT enabled::text FROM sluice.outbound_endpoints") == "false")
        #expect(stripe.received.filter { $0.path == "/hooks" }.count == 1)
    }

    @Test("a rotated secret signs beside the new one for 24 hours; an erased event is not sent")
    func rotation() throws {
        let (run, stripe, _) = try setUp()
        let connection = try run.connect()
        try connection.run(
            script: """
                UPDATE sluice.outbound_endpoints
                SET previous_secret = secret, previous_secret_until = now() + interval '24 hours',
                    secret = 'whsec_QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB';
                """, context: "rotating")
        _ = try connection.firstValue(
            "SELECT billing.emit('access.changed', now(), '{\"user_id\": \"user_2\"}', 'user_2', 'test:3')")
        try connection.run(script: "DELETE FROM sluice.outbound_events WHERE user_id = 'user_2'", context: "erasing")
        try run.process([], environment: Self.outbound)
        let posts = stripe.received.filter { $0.path == "/hooks" }
        #expect(posts.count == 1, "the erased event's delivery sent nothing")
        #expect(
            posts.allSatisfy {
                Self.verifies($0) && Self.verifies($0, secret: "whsec_QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB")
            })
    }

    @Test(
        "with every queue worked, an endpoint that never answers holds up no other queue: outbound has slots of its own"
    )
    func silentEndpointHoldsUpNothing() throws {
        let run = try BillingRun()
        // Connections are taken by the kernel's backlog and never answered: each delivery waits its 10 s.
        let (silent, port) = try Loopback.bind(listening: 64)
        defer { close(silent) }
        let connection = try run.connect()
        try connection.run(
            script: """
                INSERT INTO sluice.outbound_endpoints (url, secret) VALUES ('http://127.0.0.1:\(port)/hooks', '\(Self.secret)');
                SELECT billing.emit('access.changed', now(), jsonb_build_object('user_id', 'user_' || n, 'version', 1),
                                    'user_' || n, 'test:' || n)
                FROM generate_series(1, 20) AS n;
                """, context: "twenty deliveries to a silent endpoint")
        let worker = try SluiceProcess(
            ["work"], databaseURL: run.url,
            environment: [
                "SLUICE_CONCURRENCY": "2", "SLUICE_PERIODIC": "off", "SLUICE_ADMIN_LISTEN": "off",
                "SLUICE_TEST_JOBS": "1",
            ])
        defer { worker.signal(SIGKILL) }
        let hanging = eventually(timeout: 10) {
            (try? connection.firstValue(
                "SELECT count(*) FROM sluice.jobs WHERE kind = 'outbound.deliver' AND state = 'running'")) != "0"
        }
        #expect(hanging, "no delivery started:\n\(worker.log)")
        _ = try JobQueue().enqueue(
            [NewJob(kind: "sluice.noop"), NewJob(kind: "sluice.noop"), NewJob(kind: "sluice.noop")], on: connection)
        // Well inside one delivery's 10 s: in a lane shared with the deliveries, they waited for it.
        let others = eventually(timeout: 5) {
            (try? connection.firstValue("SELECT count(*) FROM sluice.jobs WHERE kind = 'sluice.noop'")) == "0"
        }
        #expect(others, "the default queue waited behind the silent endpoint:\n\(worker.log)")
    }
}
