import Foundation
import PGQueue
import TestKit
import Testing

@testable import Worker

/// The app's API through the real `sluice api`, connected as `sluice_api` on a cluster of the test's own
/// (roles are cluster-wide), with service keys made as the owner.
@Suite("app API", .serialized)
struct APITests {
    /// A cluster with deploy/roles.sql, a user on a plan, and `sluice api` running as sluice_api.
    final class APIUnderTest: Sendable {
        let cluster: Cluster
        let process: SluiceProcess
        let port: Int

        init(clerk: ClerkTokens? = nil, environment extra: [String: String] = [:]) throws {
            cluster = try Cluster()
            let owner = try cluster.connect()
            try owner.run(script: Repository.text("deploy/roles.sql"), context: "applying deploy/roles.sql")
            try owner.run(
                script: "INSERT INTO billing.plan_limits VALUES ('free', 'seats', 3)", context: "a plan limit")
            try BillingEvents.apply(
                BillingEvents().clerk(
                    "ada", "user.created", at: 0,
                    BillingEvents().user("ada", email: "a@x", first: "A", last: "L", updatedMinute: 0)),
                on: owner)
            var environment = ["SLUICE_LISTEN": "127.0.0.1:0", "SLUICE_ADMIN_LISTEN": "127.0.0.1:0"].merging(extra) {
                _, new in new
            }
            if let clerk {
                // One line, as an environment file holds it.
                environment["CLERK_JWT_KEY"] = clerk.publicPEM.replacingOccurrences(of: "\n", with: "\\n")
                environment["CLERK_ISSUER"] = ClerkTokens.issuer
                environment["CLERK_AUTHORIZED_PARTIES"] = "https://app.sluice.test"
            }
            process = try SluiceProcess(
                ["api"], databaseURL: cluster.url.replacingOccurrences(of: "://postgres@", with: "://sluice_api@"),
                environment: environment)
            let process = process
            _ = eventually(timeout: 30) { process.listeningPort("API") != nil || !process.isRunning }
            guard let port = process.listeningPort("API") else {
                throw ScriptFailure(description: "sluice api did not start:\n\(process.log)")
            }
            self.port = port
        }

        /// A new key with these scopes.
        func key(_ scopes: [String]) throws -> String {
            let key = ServiceKey.generate()
            _ = try ServiceKeyStore(connection: try cluster.connect()).create(key, name: "test", scopes: scopes)
            return key.secret
        }

        func get(_ path: String, token: String? = nil) throws -> (status: Int?, headers: String, body: String) {
            var head = "GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
            if let token { head += "Authorization: Bearer \(token)\r\n" }
            return try exchange(head + "\r\n", body: [])
        }

        func post(_ path: String, token: String?, headers: [(String, String)] = [], json: String) throws -> (
            status: Int?, headers: String, body: String
        ) {
            var head = "POST \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
            head += "Content-Type: application/json\r\nContent-Length: \(json.utf8.count)\r\n"
            if let token { head += "Authorization: Bearer \(token)\r\n" }
            for (name, value) in headers { head += "\(name): \(value)\r\n" }
            return try exchange(head + "\r\n", body: Array(json.utf8))
        }

        private func exchange(_ head: String, body: [UInt8]) throws -> (status: Int?, headers: String, body: String) {
            let reply = try RawHTTP.exchange(port: port, request: Array(head.utf8) + body)
            return (reply.status, reply.headers, reply.body)
        }
    }

    static func json(_ text: String) -> [String: Any] {
        (try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any]) ?? [:]
    }

    @Test("the document is served as built; no route but the document answers without credentials")
    func documentAndAnonymous() throws {
        let api = try APIUnderTest()
        let document = try api.get("/v1/openapi.yaml")
        #expect(document.status == 200)
        #expect(document.body == (try Repository.text("Sources/Worker/API/openapi.yaml")))
        for path in ["/v1/me", "/v1/me/invoices", "/v1/users/ada/access", "/v1/jobs/1"] {
            let reply = try api.get(path)
            #expect(reply.status == 401, "\(path): \(reply.body)")
            #expect(reply.headers.lowercased().contains("www-authenticate: bearer realm=\"sluice\""), "\(path)")
            #expect(reply.headers.lowercased().contains("content-type: application/problem+json"), "\(path)")
            #expect(Self.json(reply.body)["type"] as? String == "urn:sluice:problem:unauthorized")
        }
        let usage = try api.post("/v1/usage", token: nil, headers: [("Idempotency-Key", "k")], json: "{}")
        #expect(usage.status == 401 || usage.status == 400, "\(usage.body)")
    }

    @Test("service keys: a user's access with access:read; another scope 403; an unknown or revoked key 401")
    func serviceAccess() throws {
        let api = try APIUnderTest()
        let reader = try api.key(["access:read"])
        let reply = try api.get("/v1/users/ada/access", token: reader)
        #expect(reply.status == 200, "\(reply.body)\n\(api.process.log)")
        let body = Self.json(reply.body)
        #expect(body["user_id"] as? String == "ada" && body["plan"] as? String == "free")
        #expect((body["entitlements"] as? [[String: Any]])?.first?["feature"] as? String == "seats")

        let writer = try api.key(["usage:write"])
        let forbidden = try api.get("/v1/users/ada/access", token: writer)
        #expect(
            forbidden.status == 403
                && Self.json(forbidden.body)["type"] as? String == "urn:sluice:problem:missing-scope")
        #expect(
            try api.get("/v1/users/ada/access", token: "sk_sluice_" + String(repeating: "x", count: 43)).status == 401)
        try api.cluster.connect().run(script: "UPDATE sluice.api_keys SET revoked_at = now()", context: "revoke all")
        // The key was just checked and so is cached; the trigger's NOTIFY empties the cache milliseconds after
        // the commit.
        var revoked = try api.get("/v1/users/ada/access", token: reader)
        _ = eventually(timeout: 2) {
            revoked = (try? api.get("/v1/users/ada/access", token: reader)) ?? revoked
            return revoked.status == 401
        }
        #expect(revoked.status == 401, "revoked at once: \(revoked.body)")
        #expect(revoked.headers.contains("invalid_token"))
    }

    @Test("usage: once per Idempotency-Key; the same key with another body 409; bad fields 422 naming them")
    func usage() throws {
        let api = try APIUnderTest()
        let writer = try api.key(["usage:write"])
        let body = #"{"user_id": "ada", "feature": "seats", "quantity": 2}"#
        let first = try api.post("/v1/usage", token: writer, headers: [("Idempotency-Key", "u1")], json: body)
        #expect(first.status == 200, "\(first.body)\n\(api.process.log)")
        #expect(Self.json(first.body)["allowed"] as? Bool == true && Self.json(first.body)["used"] as? Int == 2)
        let again = try api.post("/v1/usage", token: writer, headers: [("Idempotency-Key", "u1")], json: body)
        #expect(Self.json(again.body)["repeated"] as? Bool == true && Self.json(again.body)["used"] as? Int == 2)
        let other = #"{"user_id": "ada", "feature": "seats", "quantity": 1}"#
        let conflict = try api.post("/v1/usage", token: writer, headers: [("Idempotency-Key", "u1")], json: other)
        #expect(conflict.status == 409, "\(conflict.body)")
        let denied = try api.post("/v1/usage", token: writer, headers: [("Idempotency-Key", "u2")], json: body)
        #expect(denied.status == 200 && Self.json(denied.body)["allowed"] as? Bool == false, "a denial is an answer")

        let invalid = try api.post(
            "/v1/usage", token: writer, headers: [("Idempotency-Key", "u3")],
            json: #"{"user_id": "", "feature": "seats", "quantity": 0}"#)
        #expect(invalid.status == 422, "\(invalid.body)")
        let fields = (Self.json(invalid.body)["errors"] as? [[String: Any]])?.compactMap { $0["field"] as? String }
        #expect(fields == ["user_id", "quantity"])
        let nul = try api.post(
            "/v1/usage", token: writer, headers: [("Idempotency-Key", "u5")],
            json: #"{"user_id": "ada\u0000x", "feature": "seats", "quantity": 1}"#)
        #expect(nul.status == 422, "a NUL would be cut short by libpq: \(nul.body)")
        let noKey = try api.post("/v1/usage", token: writer, json: body)
        #expect(noKey.status == 400, "\(noKey.body)")
        let reader = try api.key(["access:read"])
        #expect(
            try api.post("/v1/usage", token: reader, headers: [("Idempotency-Key", "u4")], json: body).status == 403)
    }

    @Test("a signed-in user reads their own access and invoices; a service key, a forged or expired token get 401")
    func userRoutes() async throws {
        let clerk = try ClerkTokens()
        let api = try APIUnderTest(clerk: clerk)
        let me = try api.get("/v1/me", token: try await clerk.token(user: "ada"))
        #expect(me.status == 200, "\(me.body)\n\(api.process.log)")
        #expect(Self.json(me.body)["user_id"] as? String == "ada" && Self.json(me.body)["plan"] as? String == "free")
        let invoices = try api.get("/v1/me/invoices?limit=5", token: try await clerk.token(user: "ada"))
        #expect(invoices.status == 200 && Self.json(invoices.body)["invoices"] as? [Any] != nil, "\(invoices.body)")
        #expect(try api.get("/v1/me/invoices?limit=500", token: try await clerk.token()).status == 400)
        // An invoice the model knows only by id (no event has said its status or currency yet) is listed too.
        try api.cluster.connect().run(
            script: """
                INSERT INTO billing.customer_links (customer_id, user_id, linked_by, event_id)
                VALUES ('cus_ada', 'ada', 'test', 'evt_link');
                INSERT INTO billing.invoices (id, customer_id) VALUES ('in_bare', 'cus_ada');
                """, context: "a bare invoice")
        let bare = try api.get("/v1/me/invoices", token: try await clerk.token(user: "ada"))
        #expect(bare.status == 200, "\(bare.body)")
        let listed = (Self.json(bare.body)["invoices"] as? [[String: Any]])?.first
        #expect(listed?["id"] as? String == "in_bare" && listed?["currency"] == nil, "\(bare.body)")

        let key = try api.key(["access:read", "usage:write", "billing:write"])
        let asService = try api.get("/v1/me", token: key)
        #expect(asService.status == 401 && asService.body.contains("not a service key"))
        #expect(try api.get("/v1/me", token: ClerkTokens.unsigned()).status == 401, "alg none is not a session")
        let expired = try api.get("/v1/me", token: try await clerk.token(expiresIn: -60))
        #expect(expired.status == 401 && expired.headers.contains(#"error="invalid_token""#), "\(expired.headers)")
        #expect(try api.get("/v1/me", token: try await ClerkTokens().token()).status == 401, "another key")
    }

    @Test("with CLERK_JWKS_URL the keys are fetched at start and again for a new kid, at most once a minute")
    func publishedKeys() async throws {
        let (first, second, stranger) = (try ClerkTokens(), try ClerkTokens(), try ClerkTokens())
        let server = try FakeStripe()
        server.script(
            "GET", "/jwks.json",
            [
                .init(status: 200, body: #"{"keys":[\#(try first.jwk(kid: "k1"))]}"#),
                .init(status: 200, body: #"{"keys":[\#(try first.jwk(kid: "k1")),\#(try second.jwk(kid: "k2"))]}"#),
            ])
        let api = try APIUnderTest(environment: [
            "CLERK_JWKS_URL": server.url + "/jwks.json", "CLERK_ISSUER": ClerkTokens.issuer,
        ])
        func fetches() -> Int { server.received.filter { $0.path == "/jwks.json" }.count }
        let me = try api.get("/v1/me", token: try await first.token(kid: "k1"))
        #expect(me.status == 200, "\(me.body)\n\(api.process.log)")
        #expect(fetches() == 1)
        // Clerk published a second key: the first token naming it fetches the set again.
        #expect(try api.get("/v1/me", token: try await second.token(user: "bob", kid: "k2")).status == 200)
        #expect(fetches() == 2)
        // Made-up kids, a kid that is not the signer's, no kid: 401, and no fetch within the minute.
        #expect(try api.get("/v1/me", token: try await stranger.token(kid: "k3")).status == 401)
        #expect(try api.get("/v1/me", token: try await stranger.token(kid: "k1")).status == 401)
        #expect(try api.get("/v1/me", token: try await first.token()).status == 401)
        #expect(try api.get("/v1/me", token: try await first.hmacWithPublicKey()).status == 401)
        #expect(fetches() == 2)
    }

    @Test("without CLERK_JWT_KEY every session token is refused with 401")
    func noClerkKey() async throws {
        let api = try APIUnderTest()
        let me = try api.get("/v1/me", token: try await ClerkTokens().token())
        #expect(me.status == 401 && me.body.contains("CLERK_JWT_KEY"), "\(me.body)")
    }

    @Test("sluice api refuses to run as the schema's owner or a superuser, exit 78")
    func refusesOwner() throws {
        let database = try TestDatabase()
        let api = try SluiceProcess(["api"], databaseURL: database.url, environment: ["SLUICE_LISTEN": "127.0.0.1:0"])
        #expect(api.waitForExit(timeout: 20) == 78)
        #expect(api.log.contains("must not connect as the schema's owner"), "\(api.log)")
    }

    @Test("limits: a body over 64 KiB is 413 unread; past the caller's rate 429 with Retry-After; each request logged")
    func limits() throws {
        let api = try APIUnderTest(environment: ["SLUICE_API_RATE_LIMIT": "2"])
        let writer = try api.key(["usage:write"])
        let huge =
            #"{"user_id": "ada", "feature": "seats", "quantity": 1, "pad": ""# + String(repeating: "x", count: 70_000)
            + "\"}"
        let tooLarge = try api.post("/v1/usage", token: writer, headers: [("Idempotency-Key", "big")], json: huge)
        #expect(tooLarge.status == 413, "\(tooLarge.body)")
        #expect(try api.cluster.count("SELECT count(*) FROM billing.usage_events") == 0)

        let reader = try api.key(["access:read"])
        var statuses: [Int?] = []
        for _ in 0..<6 { statuses.append(try api.get("/v1/users/ada/access", token: reader).status) }
        #expect(statuses.prefix(3).allSatisfy { $0 == 200 }, "\(statuses)")
        #expect(statuses.contains(429), "a burst of 4 at 2 a second: \(statuses)")
        let spoofed = try api.get("/v1/users/ada/access", token: "sk_sluice_" + String(repeating: "z", count: 43))
        #expect(spoofed.status == 401, "a made-up key is refused, not limited as a verified caller's")
        let limited = try api.get("/v1/users/ada/access", token: reader)
        #expect(limited.status == 429 && limited.headers.lowercased().contains("retry-after: "), "\(limited.headers)")
        #expect(Self.json(limited.body)["type"] as? String == "urn:sluice:problem:rate-limited")
        #expect(
            try api.get("/v1/users/ada/access", token: try api.key(["access:read"])).status == 200, "another caller")

        #expect(api.process.log.contains("API request"), "\(api.process.log)")
        #expect(api.process.log.contains("caller=service:"))
        #expect(!api.process.log.contains(reader) && !api.process.log.contains(writer), "no token in the log")
    }

    @Test("a flood of requests with made-up keys is answered in full, logged a hundred lines per status, then summed")
    func floodIsNotLoggedLineByLine() throws {
        let api = try APIUnderTest()
        let flood = 300
        // Lines from before the flood (start-up's own requests) are not the flood's.
        let before = api.process.log.split(separator: "\n").filter {
            $0.contains("API request") && $0.contains("http.status=4")
        }.count
        let clock = ContinuousClock()
        let started = clock.now
        for index in 0..<flood {
            let status = try api.get("/v1/users/ada/access", token: "sk_sluice_made_up_\(index)").status
            #expect(status == 401 || status == 429)
        }
        let took = clock.now - started
        func lines(_ text: String) -> [Substring] {
            api.process.log.split(separator: "\n").filter { $0.contains(text) && $0.contains("http.status=4") }
        }
        func written() -> Int { lines("API request").count - lines("API request lines skipped").count - before }
        func skipped() -> Int { skippedLines(lines("API request lines skipped")) }
        // What was skipped is summed up once its ten-second window has ended.
        let deadline = clock.now + .seconds(40)
        while clock.now < deadline, written() + skipped() < flood {
            Thread.sleep(forTimeInterval: 0.2)
        }
        #expect(written() + skipped() == flood, "every request is a line or counted in one")
        // 401s and 429s have a hundred lines each per ten-second window.
        let windows = Int(took / .seconds(10)) + 1
        #expect(written() < flood && written() <= 2 * 100 * windows, "\(written()) lines for \(flood)")
    }

    @Test("CORS: pages of SLUICE_CORS_ORIGINS may read answers and preflight; any other origin gets no allow header")
    func cors() throws {
        let api = try APIUnderTest(environment: ["SLUICE_CORS_ORIGINS": "https://app.sluice.test"])
        func exchange(_ request: String) throws -> HTTPReply {
            try RawHTTP.exchange(port: api.port, request: Array(request.utf8))
        }
        let preflight = try exchange(
            "OPTIONS /v1/usage HTTP/1.1\r\nHost: x\r\nOrigin: https://app.sluice.test\r\n"
                + "Access-Control-Request-Method: POST\r\nConnection: close\r\n\r\n")
        #expect(preflight.status == 204, "\(preflight.headers)")
        let allowedHeaders = preflight.headers.lowercased()
        #expect(allowedHeaders.contains("access-control-allow-origin: https://app.sluice.test"))
        #expect(allowedHeaders.contains("idempotency-key"))
        let foreign = try exchange(
            "OPTIONS /v1/usage HTTP/1.1\r\nHost: x\r\nOrigin: https://evil.test\r\n"
                + "Access-Control-Request-Method: POST\r\nConnection: close\r\n\r\n")
        #expect(foreign.status == 403 && !foreign.headers.lowercased().contains("access-control-allow-origin"))

        let reader = try api.key(["access:read"])
        let read = try exchange(
            "GET /v1/users/ada/access HTTP/1.1\r\nHost: x\r\nOrigin: https://app.sluice.test\r\n"
                + "Authorization: Bearer \(reader)\r\nConnection: close\r\n\r\n")
        #expect(
            read.status == 200
                && read.headers.lowercased().contains("access-control-allow-origin: https://app.sluice.test"))
        let elsewhere = try exchange(
            "GET /v1/users/ada/access HTTP/1.1\r\nHost: x\r\nOrigin: https://evil.test\r\n"
                + "Authorization: Bearer \(reader)\r\nConnection: close\r\n\r\n")
        #expect(!elsewhere.headers.lowercased().contains("access-control-allow-origin"), "\(elsewhere.headers)")
    }
}
