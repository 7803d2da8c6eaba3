import Foundation
import PGQueue
import TestKit
import Testing

/// The webhook receiver, through real HTTP requests to the `sluice receive` binary and a PostgreSQL cluster
/// of the test's own. Deliveries are signed with the test secrets by `WebhookSigning`, which follows Stripe's
/// and Svix's published algorithms independently of the receiver's code.
@Suite("webhook receiver", .serialized)
struct ReceiverTests {
    @Test("genuine Stripe deliveries of every fixture are accepted once each and kept byte for byte")
    func stripeAccepted() throws {
        let receiver = try ReceiverUnderTest()
        // Some fixtures share an event id (customer_deleted and customer_updated): the first one wins.
        var firstBodyOfEvent: [String: [UInt8]] = [:]
        for name in WebhookSigning.stripeFixtures {
            let body = try WebhookSigning.fixture("stripe/events/\(name).json")
            let event = try JSONSerialization.jsonObject(with: Data(body)) as? [String: Any]
            let id = try #require(event?["id"] as? String)
            if firstBodyOfEvent[id] == nil { firstBodyOfEvent[id] = body }
            let header = WebhookSigning.stripeHeader(body)
            let reply = try receiver.post("stripe", headers: [("Stripe-Signature", header)], body: body)
            #expect(reply.status == 200, "\(name): \(reply.body)\n\(receiver.process.log)")
            // A redelivery of the same event is absorbed.
            let again = try receiver.post("stripe", headers: [("Stripe-Signature", header)], body: body)
            #expect(again.status == 200)
        }
        #expect(try receiver.jobCount() == firstBodyOfEvent.count)

        let rows = try receiver.database.connect().query(
            """
            SELECT kind, queue, unique_key, payload ->> 'event_id', payload ->> 'body',
                   payload -> 'headers' ->> 'stripe-signature'
            FROM sluice.jobs
            """, context: "read the jobs")
        for job in rows {
            let id = try job.decode(String.self, at: 3)
            #expect(try job.decode(String.self, at: 0) == "stripe.event")
            #expect(try job.decode(String.self, at: 1) == "webhooks")
            #expect(try job.decode(String.self, at: 2) == "stripe:\(id)")
            #expect(Array(try job.decode(String.self, at: 4).utf8) == firstBodyOfEvent[id])
            #expect(try job.decode(String.self, at: 5).hasPrefix("t="))
        }
        let accepted = firstBodyOfEvent.count
        #expect(try receiver.metric(#"sluice_webhooks_total{source="stripe",outcome="accepted"}"#) == accepted)
        #expect(
            try receiver.metric(#"sluice_webhooks_total{source="stripe",outcome="duplicate"}"#)
                == 2 * WebhookSigning.stripeFixtures.count - accepted)
    }

    @Test("one connection, requests pipelined: answers come back in order, webhook and router routes mixed")
    func pipelinedInOrder() throws {
        let receiver = try ReceiverUnderTest()
        func delivery(_ id: String, signed: Bool = true) throws -> [UInt8] {
            let body = try WebhookSigning.stripeEvent("stripe/events/invoice_paid.json", id: id)
            let header = signed ? WebhookSigning.stripeHeader(body) : "t=1,v1=00"
            return Array(
                "POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\nContent-Length: \(body.count)\r\nStripe-Signature: \(header)\r\n\r\n"
                    .utf8) + body
        }
        // A delivery that waits for its commit, a refusal, a route the router answers, another delivery, then
        // the request that closes: all in one write, so each answer must wait for the one before it.
        let request =
            try delivery("evt_pipelined_1") + delivery("evt_pipelined_2", signed: false)
            + Array("GET /webhooks/nowhere HTTP/1.1\r\nHost: x\r\n\r\n".utf8) + delivery("evt_pipelined_3")
            + Array(
                "POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}".utf8)
        let reply = try RawHTTP.exchange(port: receiver.port, request: request)
        let whole = reply.headers + "\r\n\r\n" + reply.body
        let statuses = whole.components(separatedBy: "HTTP/1.1 ").dropFirst().map { $0.prefix(3) }
        #expect(statuses == ["200", "400", "404", "200", "400"], "\(whole)")
        #expect(try receiver.jobCount() == 2)
    }

    @Test("a sender that half-closes after its request still gets its answer once the row is committed")
    func halfClosedSender() throws {
        let receiver = try ReceiverUnderTest()
        let body = try WebhookSigning.stripeEvent("stripe/events/invoice_paid.json", id: "evt_half_closed")
        let request =
            Array(
                "POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\nContent-Length: \(body.count)\r\nStripe-Signature: \(WebhookSigning.stripeHeader(body))\r\n\r\n"
                    .utf8) + body
        let reply = try RawHTTP.exchange(port: receiver.port, request: request, halfClose: true)
        #expect(reply.status == 200, "\(reply.headers)")
        #expect(try receiver.jobCount() == 1)
    }

    @Test("a body sent in thousands of one-byte chunks is read whole, and one past 1 MiB is cut off")
    func tinyChunks() throws {
        let receiver = try ReceiverUnderTest()
        let body = try WebhookSigning.stripeEvent("stripe/events/invoice_paid.json", id: "evt_tiny_chunks")
        var request = Array(
            "POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\nStripe-Signature: \(WebhookSigning.stripeHeader(body))\r\n\r\n"
                .utf8)
        for byte in body { request += Array("1\r\n".utf8) + [byte] + Array("\r\n".utf8) }
        request += Array("0\r\n\r\n".utf8)
        #expect(try RawHTTP.exchange(port: receiver.port, request: request).status == 200)
        #expect(try receiver.jobCount() == 1)
    }

    @Test("a sender that keeps uploading after its 413 is cut off instead of being read without end")
    func uploadAfterRefusalIsCutOff() throws {
        let receiver = try ReceiverUnderTest()
        let head = Array(
            "POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\nContent-Length: 1099511627776\r\nStripe-Signature: t=1,v1=00\r\n\r\n"
                .utf8)
        let reply = try RawHTTP.exchange(
            port: receiver.port, request: head + [UInt8](repeating: UInt8(ascii: "a"), count: 12 << 20), timeout: 10)
        #expect(!reply.timedOut, "the server kept the connection open and went on reading")
        #expect(try receiver.metric(#"sluice_webhooks_total{source="stripe",outcome="too_large"}"#) == 1)
    }

    @Test("twenty concurrent deliveries of one event make one job; a verified unknown type is accepted")
    func concurrentDuplicates() throws {
        let receiver = try ReceiverUnderTest()
        let body = try WebhookSigning.stripeEvent("stripe/events/invoice_paid.json", id: "evt_concurrent_1")
        let header = WebhookSigning.stripeHeader(body)
        let statuses = Box<[Int?]>([])
        try onThreads(20) { _ in
            let reply = try receiver.post("stripe", headers: [("Stripe-Signature", header)], body: body)
            statuses.value.withLock { $0.append(reply.status) }
        }
        #expect(statuses.value.withLock { $0 } == Array(repeating: 200, count: 20))
        #expect(try receiver.jobCount() == 1)
        #expect(try receiver.metric(#"sluice_webhooks_total{source="stripe",outcome="accepted"}"#) == 1)
        #expect(try receiver.metric(#"sluice_webhooks_total{source="stripe",outcome="duplicate"}"#) == 19)

        let unknown = Array(
            #"{"id":"evt_unknown_type","object":"event","type":"radar.early_fraud_warning.created"}"#.utf8)
        let reply = try receiver.post(
            "stripe", headers: [("Stripe-Signature", WebhookSigning.stripeHeader(unknown))], body: unknown)
        #expect(reply.status == 200)
        #expect(try receiver.jobCount() == 2)
    }

    @Test("a rotated secret: two secrets configured, and a header with two v1 signatures, both work")
    func rotatedSecrets() throws {
        let receiver = try ReceiverUnderTest(environment: [
            "STRIPE_WEBHOOK_SECRET": "\(WebhookSigning.stripeSecret), \(WebhookSigning.stripeRotatedSecret)",
            "CLERK_WEBHOOK_SECRET": "\(WebhookSigning.clerkSecret),\(WebhookSigning.clerkRotatedSecret)",
        ])
        let stripeSigners: [[String]] = [
            [WebhookSigning.stripeSecret], [WebhookSigning.stripeRotatedSecret],
            ["whsec_not_configured_any_more", WebhookSigning.stripeRotatedSecret],
        ]
        for (index, secrets) in stripeSigners.enumerated() {
            let body = try WebhookSigning.stripeEvent("stripe/events/customer_updated.json", id: "evt_rotated_\(index)")
            let header = WebhookSigning.stripeHeader(body, secrets: secrets)
            #expect(try receiver.post("stripe", headers: [("Stripe-Signature", header)], body: body).status == 200)
        }
        let clerkSigners: [[String]] = [
            [WebhookSigning.clerkSecret], [WebhookSigning.clerkRotatedSecret],
            ["whsec_" + Data(repeating: 9, count: 32).base64EncodedString(), WebhookSigning.clerkSecret],
        ]
        let body = try WebhookSigning.fixture("clerk/user_updated.json")
        for (index, secrets) in clerkSigners.enumerated() {
            let headers = WebhookSigning.svixHeaders(body, id: "msg_rotated_\(index)", secrets: secrets)
            #expect(try receiver.post("clerk", headers: headers, body: body).status == 200)
        }
        #expect(try receiver.jobCount() == 6)
    }

    @Test("every bad Stripe delivery is refused as specified and enqueues nothing")
    func stripeRefusals() throws {
        let receiver = try ReceiverUnderTest()
        let body = try WebhookSigning.stripeEvent("stripe/events/subscription_updated.json", id: "evt_refused")
        let good = WebhookSigning.stripeHeader(body)
        var tampered = body
        tampered[tampered.count / 2] ^= 0x01
        let signedText: (String) -> (String, [UInt8]) = { text in
            (WebhookSigning.stripeHeader(Array(text.utf8)), Array(text.utf8))
        }
        let (emptyHeader, empty) = signedText("")
        let (notJSONHeader, notJSON) = signedText("this is not json")
        let (arrayHeader, array) = signedText(#"[{"id":"evt_x","type":"a"}]"#)
        let (noIDHeader, noID) = signedText(#"{"type":"customer.updated"}"#)
        let (noTypeHeader, noType) = signedText(#"{"id":"evt_no_type"}"#)
        let v1 = good.split(separator: ",")[1]
        let cases: [(name: String, headers: [(String, String)], body: [UInt8], status: Int, outcome: String)] = [
            ("tampered body", [("Stripe-Signature", good)], tampered, 400, "bad_signature"),
            (
                "wrong secret",
                [("Stripe-Signature", WebhookSigning.stripeHeader(body, secrets: ["whsec_wrong_secret"]))],
                body, 400, "bad_signature"
            ),
            ("missing header", [], body, 400, "bad_signature"),
            ("header without t", [("Stripe-Signature", String(v1))], body, 400, "bad_signature"),
            ("header without v1", [("Stripe-Signature", "t=\(WebhookSigning.now())")], body, 400, "bad_signature"),
            ("garbage header", [("Stripe-Signature", "garbage,,,==")], body, 400, "bad_signature"),
            (
                "only a v0 signature", [("Stripe-Signature", good.replacingOccurrences(of: "v1=", with: "v0="))], body,
                400,
                "bad_signature"
            ),
            (
                "stale timestamp",
                [("Stripe-Signature", WebhookSigning.stripeHeader(body, timestamp: WebhookSigning.now() - 301))], body,
                400, "stale"
            ),
            ("empty body", [("Stripe-Signature", emptyHeader)], empty, 400, "malformed"),
            ("non-JSON body", [("Stripe-Signature", notJSONHeader)], notJSON, 400, "malformed"),
            ("JSON array body", [("Stripe-Signature", arrayHeader)], array, 400, "malformed"),
            ("no id", [("Stripe-Signature", noIDHeader)], noID, 400, "malformed"),
            ("no type", [("Stripe-Signature", noTypeHeader)], noType, 400, "malformed"),
        ]
        for test in cases {
            let reply = try receiver.post("stripe", headers: test.headers, body: test.body)
            #expect(reply.status == test.status, "\(test.name): \(reply.body)")
        }
        // Over 1 MiB: refused from Content-Length before reading, and when the length is not declared.
        let big = [UInt8](repeating: UInt8(ascii: "a"), count: (1 << 20) + 1)
        let bigReply = try receiver.post(
            "stripe", headers: [("Stripe-Signature", WebhookSigning.stripeHeader(big))], body: big)
        #expect(bigReply.status == 413)
        let chunked = try RawHTTP.exchange(
            port: receiver.port,
            request: Array(
                "POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\nStripe-Signature: \(WebhookSigning.stripeHeader(big))\r\n\r\n100001\r\n"
                    .utf8) + big + Array("\r\n0\r\n\r\n".utf8))
        #expect(chunked.status == 413)

        #expect(try receiver.jobCount() == 0)
        #expect(try receiver.database.count("SELECT count(*) FROM sluice.unique_keys") == 0)
        for outcome in ["bad_signature", "stale", "malformed", "too_large"] {
            let expected = cases.filter { $0.outcome == outcome }.count + (outcome == "too_large" ? 2 : 0)
            #expect(try receiver.metric(#"sluice_webhooks_total{source="stripe",outcome="\#(outcome)"}"#) == expected)
        }
        // Nothing secret reached the log: not the secret, not a signature, not the body.
        let log = receiver.process.log
        #expect(!log.contains(WebhookSigning.stripeSecret))
        #expect(!log.contains(String(v1.dropFirst(3))))
        #expect(!log.contains("stripe_sync_engine") && !log.contains("\"object\""))

        // The same event, genuine, is still accepted afterwards: refusals left no trace that blocks it.
        #expect(try receiver.post("stripe", headers: [("Stripe-Signature", good)], body: body).status == 200)
    }

    @Test("a flood of deliveries is answered and counted in full, logged a few lines at a time and then summed up")
    func floodIsNotLoggedLineByLine() throws {
        let receiver = try ReceiverUnderTest()
        // Forged: anyone on the internet can send these, as many as they like. A line each would crowd the
        // service's other warnings out of journald (which drops lines past 10,000 of a priority in 30 s).
        let forged = try WebhookSigning.stripeEvent("stripe/events/invoice_paid.json", id: "evt_forged")
        let forgedHeader = WebhookSigning.stripeHeader(forged, secrets: ["whsec_not_the_secret"])
        let clock = ContinuousClock()
        let forging = clock.now
        for _ in 0..<200 {
            #expect(
                try receiver.post("stripe", headers: [("Stripe-Signature", forgedHeader)], body: forged).status == 400)
        }
        #expect(try receiver.metric(#"sluice_webhooks_total{source="stripe",outcome="bad_signature"}"#) == 200)
        let forgingTook = clock.now - forging
        // Genuine, in a burst: each is accepted and counted, and the first lines still name their events.
        let burst = 120
        let bursting = clock.now
        for index in 0..<burst {
            let body = try WebhookSigning.stripeEvent("stripe/events/invoice_paid.json", id: "evt_burst_\(index)")
            let header = WebhookSigning.stripeHeader(body)
            #expect(try receiver.post("stripe", headers: [("Stripe-Signature", header)], body: body).status == 200)
        }
        let burstTook = clock.now - bursting
        #expect(try receiver.jobCount() == burst)
        #expect(try receiver.metric(#"sluice_webhooks_total{source="stripe",outcome="accepted"}"#) == burst)

        // What was skipped is summed up once its ten-second window has ended.
        // An accepted line names its event, not an outcome.
        func lines(_ text: String, _ outcome: String? = nil) -> [Substring] {
            receiver.process.log.split(separator: "\n").filter { line in
                line.contains(text) && outcome.map { line.contains("webhook.outcome=\($0)") } ?? true
            }
        }
        func skipped(_ outcome: String) -> Int { skippedLines(lines("Webhook lines skipped", outcome)) }
        let deadline = clock.now + .seconds(40)
        while clock.now < deadline,
            skipped("bad_signature") + lines("Webhook refused", "bad_signature").count < 200
                || skipped("accepted") + lines("Webhook accepted").count < burst
        {
            Thread.sleep(forTimeInterval: 0.2)
        }
        let refused = lines("Webhook refused", "bad_signature")
        let accepted = lines("Webhook accepted")
        #expect(refused.count + skipped("bad_signature") == 200, "every forged delivery is a line or counted in one")
        #expect(accepted.count + skipped("accepted") == burst)
        // A budget per ten-second window: 5 refusals, 50 acceptances (a slow machine may span two windows).
        func windows(_ took: Duration) -> Int { Int(took / .seconds(10)) + 1 }
        #expect(refused.count >= 5 && refused.count <= 5 * windows(forgingTook), "\(refused.count) lines for 200")
        #expect(accepted.count >= 50 && accepted.count < burst, "\(accepted.count) lines for \(burst)")
        #expect(accepted.count <= 50 * windows(burstTook))
        #expect(accepted.first?.contains("event.id=evt_burst_0") == true)
    }

    @Test("Clerk (Svix) deliveries: accepted under svix- and webhook- names, redeliveries absorbed, bad ones refused")
    func clerk() throws {
        let receiver = try ReceiverUnderTest()
        let created = try WebhookSigning.fixture("clerk/user_created.json")
        let updated = try WebhookSigning.fixture("clerk/user_updated.json")
        let deleted = try WebhookSigning.fixture("clerk/user_deleted.json")
        #expect(
            try receiver.post("clerk", headers: WebhookSigning.svixHeaders(created, id: "msg_1"), body: created).status
                == 200)
        #expect(
            try receiver.post(
                "clerk", headers: WebhookSigning.svixHeaders(updated, id: "msg_2", prefix: "webhook"), body: updated
            ).status == 200)
        // Svix redelivers with the same id and a new timestamp and signature.
        let redelivery = WebhookSigning.svixHeaders(created, id: "msg_1", timestamp: WebhookSigning.now() - 60)
        #expect(try receiver.post("clerk", headers: redelivery, body: created).status == 200)
        #expect(try receiver.jobCount() == 2)
        let types = try receiver.database.connect().query(
            "SELECT unique_key || ' ' || (payload ->> 'type') FROM sluice.jobs WHERE kind = 'clerk.event' ORDER BY 1",
            context: "read")
        #expect(
            try types.map { try $0.decode(String.self, at: 0) } == [
                "clerk:msg_1 user.created", "clerk:msg_2 user.updated",
            ])

        var tampered = deleted
        tampered[tampered.count - 3] ^= 0x01
        let missing: (String) -> [(String, String)] = { name in
            WebhookSigning.svixHeaders(deleted, id: "msg_3").filter { $0.0 != name }
        }
        let cases: [(name: String, headers: [(String, String)], body: [UInt8])] = [
            ("tampered body", WebhookSigning.svixHeaders(deleted, id: "msg_3"), tampered),
            (
                "wrong secret",
                WebhookSigning.svixHeaders(
                    deleted, id: "msg_3", secrets: ["whsec_" + Data(repeating: 1, count: 32).base64EncodedString()]),
                deleted
            ),
            (
                "signed for another id",
                WebhookSigning.svixHeaders(deleted, id: "msg_3").map { $0.0 == "svix-id" ? ($0.0, "msg_4") : $0 },
                deleted
            ),
            ("missing svix-id", missing("svix-id"), deleted),
            ("missing svix-timestamp", missing("svix-timestamp"), deleted),
            ("missing svix-signature", missing("svix-signature"), deleted),
            ("malformed signature", missing("svix-signature") + [("svix-signature", "v1 nonsense")], deleted),
            ("stale", WebhookSigning.svixHeaders(deleted, id: "msg_3", timestamp: WebhookSigning.now() - 301), deleted),
            (
                // Well past the 300 s: by the time a loaded machine reads it, "ahead" has shrunk.
                "from the future",
                WebhookSigning.svixHeaders(deleted, id: "msg_3", timestamp: WebhookSigning.now() + 330), deleted
            ),
            ("not JSON", WebhookSigning.svixHeaders(Array("nope".utf8), id: "msg_3"), Array("nope".utf8)),
            ("no type", WebhookSigning.svixHeaders(Array("{}".utf8), id: "msg_3"), Array("{}".utf8)),
        ]
        for test in cases {
            let reply = try receiver.post("clerk", headers: test.headers, body: test.body)
            #expect(reply.status == 400, "\(test.name): \(reply.body)")
        }
        #expect(try receiver.jobCount() == 2)
        #expect(try receiver.metric(#"sluice_webhooks_total{source="clerk",outcome="stale"}"#) == 2)
    }

    @Test("the Standard Webhooks test vector verifies: its signature matches, and only its age refuses it")
    func svixPublishedVector() throws {
        let receiver = try ReceiverUnderTest(environment: [
            "CLERK_WEBHOOK_SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
        ])
        let body = Array(#"{"test": 2432232314}"#.utf8)
        let headers = [
            ("webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek"), ("webhook-timestamp", "1614265330"),
            ("webhook-signature", "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="),
        ]
        let reply = try receiver.post("clerk", headers: headers, body: body)
        #expect(reply.status == 400)
        #expect(reply.body.contains("old"), "\(reply.body)")
        #expect(try receiver.metric(#"sluice_webhooks_total{source="clerk",outcome="stale"}"#) == 1)
        let forged = headers.map { $0.0 == "webhook-id" ? ($0.0, "msg_p5jXN8AQM9LWM0D4loKWxJeK") : $0 }
        #expect(try receiver.post("clerk", headers: forged, body: body).status == 400)
        #expect(try receiver.metric(#"sluice_webhooks_total{source="clerk",outcome="bad_signature"}"#) == 1)
    }

    @Test("PostgreSQL stopped: 503, nothing lost; once it is back, the retried delivery is accepted")
    func databaseDown() throws {
        let receiver = try ReceiverUnderTest(ownCluster: true)
        let body = try WebhookSigning.stripeEvent("stripe/events/invoice_finalized.json", id: "evt_during_outage")
        try receiver.cluster.pause()
        let reply = try receiver.post(
            "stripe", headers: [("Stripe-Signature", WebhookSigning.stripeHeader(body))], body: body)
        #expect(reply.status == 503, "\(reply.body)")
        #expect(receiver.process.isRunning)
        try receiver.cluster.resume()
        let retry = try receiver.post(
            "stripe", headers: [("Stripe-Signature", WebhookSigning.stripeHeader(body))], body: body)
        #expect(retry.status == 200, "\(retry.body)\n\(receiver.process.log)")
        #expect(try receiver.jobCount() == 1)
        #expect(try receiver.metric(#"sluice_webhooks_total{source="stripe",outcome="unavailable"}"#) == 1)
    }

    @Test("runs as the least-privileged role of deploy/roles.sql: enqueues and is ready, but reads no job")
    func leastPrivilege() throws {
        let receiver = try ReceiverUnderTest(role: "sluice_receiver")
        let body = try WebhookSigning.stripeEvent("stripe/events/product_created.json", id: "evt_least_privilege")
        let header = WebhookSigning.stripeHeader(body)
        #expect(try receiver.post("stripe", headers: [("Stripe-Signature", header)], body: body).status == 200)
        #expect(try receiver.post("stripe", headers: [("Stripe-Signature", header)], body: body).status == 200)
        #expect(try receiver.jobCount() == 1)
        #expect(try receiver.admin("/readyz").status == 200)

        let url = receiver.database.url.replacingOccurrences(of: "://postgres@", with: "://sluice_receiver@")
        let connection = try PostgresConnection(connectionString: url)
        for forbidden in [
            "SELECT count(*) FROM sluice.jobs", "SELECT count(*) FROM sluice.dead_letters",
            "SELECT sluice.enqueue('sluice.noop')", "SELECT sluice.retry_dead_kind('stripe.event')",
            "DELETE FROM sluice.unique_keys",
        ] {
            let error = try #require(throws: PostgresError.self) { try connection.query(forbidden, context: "probe") }
            #expect(error.sqlState == "42501", "\(forbidden): \(error)")
        }
    }

    @Test("random bytes and random headers never crash the receiver and never enqueue")
    func randomInput() throws {
        let receiver = try ReceiverUnderTest()
        var generator = SeededGenerator(seed: 0x5eed_c0ffee)
        let headerNames = [
            "Stripe-Signature", "svix-id", "svix-timestamp", "svix-signature", "webhook-id", "webhook-signature",
            "Content-Type", "X-Random",
        ]
        for round in 0..<300 {
            let source = ["stripe", "clerk", "nowhere"][round % 3]
            let body = (0..<Int.random(in: 0...2048, using: &generator)).map { _ in
                UInt8.random(in: 0...255, using: &generator)
            }
            var headers: [(String, String)] = []
            for _ in 0..<Int.random(in: 0...4, using: &generator) {
                let value = String(
                    (0..<Int.random(in: 0...120, using: &generator)).map { _ in
                        Character(Unicode.Scalar(UInt8.random(in: 0x20...0x7e, using: &generator)))
                    })
                headers.append((headerNames.randomElement(using: &generator)!, value))
            }
            if round % 5 == 0 {
                // Sometimes a plausible Stripe header over random bytes.
                headers.append(("Stripe-Signature", WebhookSigning.stripeHeader(body.reversed())))
            }
            let reply = try receiver.post(source, headers: headers, body: body)
            #expect(reply.status.map { [400, 404].contains($0) } ?? false, "round \(round): \(reply.status as Any)")
            if round % 10 == 0 {
                // Not even HTTP.
                let garbage = (0..<Int.random(in: 1...512, using: &generator)).map { _ in
                    UInt8.random(in: 0...255, using: &generator)
                }
                _ = try RawHTTP.exchange(port: receiver.port, request: garbage, timeout: 5)
            }
        }
        #expect(receiver.process.isRunning)
        #expect(try receiver.jobCount() == 0)
        // Still serving genuine deliveries.
        let body = try WebhookSigning.stripeEvent("stripe/events/price_created.json", id: "evt_after_noise")
        #expect(
            try receiver.post("stripe", headers: [("Stripe-Signature", WebhookSigning.stripeHeader(body))], body: body)
                .status == 200)
    }

    @Test(
        "signed deliveries with extreme or malformed timestamps answer 400 and the receiver keeps serving",
        arguments: ["-9223372036854775808", "-1", "0", "99999999999999999999", "1e9", " 1", ""])
    func extremeTimestamps(timestamp: String) throws {
        let receiver = try ReceiverUnderTest()
        let body = try WebhookSigning.stripeEvent("stripe/events/price_created.json", id: "evt_time")
        let stripe = try receiver.post(
            "stripe", headers: [("Stripe-Signature", WebhookSigning.stripeHeader(body, rawTimestamp: timestamp))],
            body: body)
        #expect(stripe.status == 400, "\(timestamp): \(stripe.body)")
        let clerkBody = try WebhookSigning.fixture("clerk/user_created.json")
        let clerk = try receiver.post(
            "clerk", headers: WebhookSigning.svixHeaders(clerkBody, id: "msg_time", rawTimestamp: timestamp),
            body: clerkBody)
        #expect(clerk.status == 400, "\(timestamp): \(clerk.body)")
        #expect(receiver.process.isRunning, "\(receiver.process.log)")
        #expect(try receiver.jobCount() == 0)
        let genuine = try receiver.post(
            "stripe", headers: [("Stripe-Signature", WebhookSigning.stripeHeader(body))], body: body)
        #expect(genuine.status == 200)
    }

    @Test("secrets come from the environment or a _FILE, never from a flag that ps shows")
    func secretsFromFiles() throws {
        let path = NSTemporaryDirectory() + "sluice-secret-\(UInt32.random(in: 0...UInt32.max))"
        defer { try? FileManager.default.removeItem(atPath: path) }
        try (WebhookSigning.stripeSecret + "\n").write(toFile: path, atomically: true, encoding: .utf8)
        let receiver = try ReceiverUnderTest(environment: [
            "STRIPE_WEBHOOK_SECRET": "", "STRIPE_WEBHOOK_SECRET_FILE": path,
        ])
        let body = try WebhookSigning.stripeEvent("stripe/events/price_created.json", id: "evt_from_file")
        #expect(
            try receiver.post("stripe", headers: [("Stripe-Signature", WebhookSigning.stripeHeader(body))], body: body)
                .status == 200)
        for flag in ["--stripe-webhook-secret", "--clerk-webhook-secret", "--stripe-api-key"] {
            let process = try SluiceProcess(
                ["receive", flag, "whsec_visible_in_ps"], databaseURL: receiver.database.url)
            #expect(process.waitForExit(timeout: 10) == 64, "\(flag): \(process.log)")
        }
        let both = try SluiceProcess(
            ["receive"], databaseURL: receiver.database.url,
            environment: ["STRIPE_WEBHOOK_SECRET": WebhookSigning.stripeSecret, "STRIPE_WEBHOOK_SECRET_FILE": path])
        #expect(both.waitForExit(timeout: 10) == 78)
        #expect(both.log.contains("not both"), "\(both.log)")
    }

    @Test("a route without a secret answers 404; a Clerk secret that does not decode stops start-up, exit 78")
    func configuration() throws {
        let receiver = try ReceiverUnderTest(environment: ["CLERK_WEBHOOK_SECRET": ""])
        let body = try WebhookSigning.fixture("clerk/user_created.json")
        #expect(
            try receiver.post("clerk", headers: WebhookSigning.svixHeaders(body, id: "msg_x"), body: body).status == 404
        )
        #expect(receiver.process.log.contains("CLERK_WEBHOOK_SECRET"))

        for secret in ["whsec_not base64!", "whsec_" + Data(repeating: 7, count: 16).base64EncodedString()] {
            let process = try SluiceProcess(
                ["receive"], databaseURL: receiver.database.url, environment: ["CLERK_WEBHOOK_SECRET": secret])
            #expect(process.waitForExit(timeout: 10) == 78)
            #expect(process.log.contains("CLERK_WEBHOOK_SECRET"), "\(process.log)")
            #expect(!process.log.contains(String(secret.dropFirst(6))), "the log shows the secret")
        }
        let stripe = try SluiceProcess(
            ["receive"], databaseURL: receiver.database.url, environment: ["STRIPE_WEBHOOK_SECRET": "sk_live_oops"])
        #expect(stripe.waitForExit(timeout: 10) == 78)
        #expect(stripe.log.contains("STRIPE_WEBHOOK_SECRET") && !stripe.log.contains("sk_live_oops"))
    }
}
