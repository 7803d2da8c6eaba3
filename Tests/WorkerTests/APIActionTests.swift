import Foundation
import PGQueue
import TestKit
import Testing

/// The routes that act on Stripe for a signed-in user, through the real `sluice api` (as sluice_api), a
/// real `sluice work` and `FakeStripe`: each starts a Stripe action job, waits for it and answers its result.
@Suite("app API: Stripe actions", .serialized)
struct APIActionTests {
    /// `sluice api` and, unless `worker` is false, `sluice work` against a fake Stripe; user_1 is subscribed
    /// (sub_1 on cus_1) and price_basic and price_pro are on sale.
    final class ActionsUnderTest: Sendable {
        let clerk: ClerkTokens
        let api: APITests.APIUnderTest
        let stripe: FakeStripe
        let worker: SluiceProcess?

        init(worker: Bool = true, waitSeconds: Double = 10, environment extra: [String: String] = [:]) throws {
            clerk = try ClerkTokens()
            api = try APITests.APIUnderTest(
                clerk: clerk,
                environment: [
                    "SLUICE_ALLOWED_REDIRECT_HOSTS": "app.sluice.test,localhost",
                    "SLUICE_API_WAIT_SECONDS": "\(waitSeconds)", "SLUICE_API_ACTION_RATE_LIMIT": "1000",
                ].merging(extra) { _, new in new })
            let owner = try api.cluster.connect()
            for delivery in BillingEvents().lifecycle.prefix(9) { try BillingEvents.apply(delivery, on: owner) }
            stripe = try FakeStripe()
            self.worker =
                worker
                ? try SluiceProcess(
                    ["work"], databaseURL: api.cluster.url,
                    environment: [
                        "STRIPE_API_BASE": stripe.url, "STRIPE_API_KEY": "sk_test_sluice",
                        "SLUICE_ADMIN_LISTEN": "off", "SLUICE_POLL_SECONDS": "0.1",
                    ]) : nil
        }

        func post(_ path: String, as user: String = "user_1", json: String) async throws -> (
            status: Int?, headers: String, body: String
        ) {
            try api.post(path, token: try await clerk.token(user: user), json: json)
        }

        func get(_ path: String, as user: String = "user_1") async throws -> (
            status: Int?, headers: String, body: String
        ) {
            try api.get(path, token: try await clerk.token(user: user))
        }

        func startedJobs() throws -> Int {
            Int(try api.cluster.connect().firstValue("SELECT count(*) FROM sluice.job_callers") ?? "") ?? -1
        }
    }

    /// The fields a 422 problem names.
    static func fields(_ body: String) -> [String] {
        (APITests.json(body)["errors"] as? [[String: Any]] ?? []).compactMap { $0["field"] as? String }
    }

    static let okURLs = #""success_url": "https://app.sluice.test/ok", "cancel_url": "https://app.sluice.test/no""#

    @Test("checkout starts a job for the user, waits for Stripe's session and answers it; the job is the user's alone")
    func checkout() async throws {
        let under = try ActionsUnderTest()
        // user_1 already subscribes: a second checkout is refused before anything starts.
        let again = try await under.post("/v1/me/checkout-session", json: #"{"price": "price_pro", \#(Self.okURLs)}"#)
        #expect(again.status == 409 && again.body.contains("already-subscribed"), "\(again.body)")
        let reply = try await under.post(
            "/v1/me/checkout-session", as: "ada", json: #"{"price": "price_pro", \#(Self.okURLs)}"#)
        #expect(reply.status == 200, "\(reply.body)\n\(under.api.process.log)\n\(under.worker?.log ?? "")")
        let body = APITests.json(reply.body)
        #expect(
            body["url"] as? String == "https://checkout.stripe.com/c/pay/cs_test" && body["id"] as? String == "cs_test")
        let sent = try #require(under.stripe.received.first { $0.path == "/v1/checkout/sessions" })
        #expect(sent.form["client_reference_id"] == "ada" && sent.form["line_items[0][price]"] == "price_pro")
        #expect(sent.form["success_url"] == "https://app.sluice.test/ok")

        let connection = try under.api.cluster.connect()
        let row = try #require(
            try connection.firstValue("SELECT job_id || ' ' || role || ' ' || caller FROM sluice.job_callers"))
        let parts = row.split(separator: " ")
        #expect(parts.dropFirst() == ["sluice_api", "user:ada"], "\(row)")
        let id = String(parts[0])
        let job = try await under.get("/v1/jobs/\(id)", as: "ada")
        #expect(job.status == 200, "\(job.body)")
        #expect(APITests.json(job.body)["state"] as? String == "succeeded", "\(job.body)")
        #expect(APITests.json(job.body)["kind"] as? String == "stripe.create_checkout_session")
        // Another user, and a service key, learn nothing of it, not even that it exists.
        #expect(try await under.get("/v1/jobs/\(id)", as: "user_1").status == 404)
        let key = try under.api.key(["access:read", "usage:write", "billing:write"])
        #expect(try under.api.get("/v1/jobs/\(id)", token: key).status == 404)
        #expect(try under.api.get("/v1/jobs/\(id)").status == 401)
        // Once its result is pruned, the job is gone for its caller too.
        try connection.run(script: "DELETE FROM sluice.job_results", context: "pruning every result")
        #expect(try await under.get("/v1/jobs/\(id)", as: "ada").status == 404)
    }

    @Test("a price not on sale, or a redirect off the allowed hosts, is a 422 naming the field, and starts nothing")
    func refusedBeforeStarting() async throws {
        let under = try ActionsUnderTest(worker: false, waitSeconds: 0.5)
        let cases: [(json: String, field: String)] = [
            (#"{"price": "price_secret_deal", \#(Self.okURLs)}"#, "price"),
            (
                #"{"price": "price_pro", "success_url": "https://evil.example/ok", "cancel_url": "https://app.sluice.test/no"}"#,
                "success_url"
            ),
            (
                #"{"price": "price_pro", "success_url": "https://app.sluice.test/ok", "cancel_url": "http://app.sluice.test/no"}"#,
                "cancel_url"
            ),
            (
                #"{"price": "price_pro", "success_url": "https://app.sluice.test.evil.example/", "cancel_url": "https://app.sluice.test/no"}"#,
                "success_url"
            ),
            (
                #"{"price": "price_pro", "success_url": "https://user@evil.example/", "cancel_url": "https://app.sluice.test/no"}"#,
                "success_url"
            ),
            (
                #"{"price": "price_pro", "success_url": "https://app.sluice.test\\@evil.example/", "cancel_url": "https://app.sluice.test/no"}"#,
                "success_url"
            ),
        ]
        for (json, field) in cases {
            let reply = try await under.post("/v1/me/checkout-session", as: "ada", json: json)
            #expect(reply.status == 422 && Self.fields(reply.body) == [field], "\(json): \(reply.body)")
        }
        let portal = try await under.post("/v1/me/portal-session", json: #"{"return_url": "https://evil.example/"}"#)
        #expect(portal.status == 422 && portal.body.contains("return_url"), "\(portal.body)")
        let plan = try await under.post("/v1/me/subscription/change-plan", json: #"{"price": "price_other"}"#)
        #expect(plan.status == 422 && Self.fields(plan.body) == ["price"], "\(plan.body)")
        #expect(try under.startedJobs() == 0)
        // Loopback may use http, for a developer's machine.
        let local = try await under.post(
            "/v1/me/checkout-session", as: "ada",
            json:
                #"{"price": "price_pro", "success_url": "http://localhost:3000/ok", "cancel_url": "http://localhost/no"}"#
        )
        #expect(local.status == 202, "\(local.body)")
    }

    @Test("portal, change of plan, cancel and resume each answer what Stripe returned")
    func subscriptionActions() async throws {
        let under = try ActionsUnderTest()
        let portal = try await under.post(
            "/v1/me/portal-session", json: #"{"return_url": "https://app.sluice.test/account"}"#)
        #expect(
            portal.status == 200
                && APITests.json(portal.body)["url"] as? String == "https://billing.stripe.com/p/session/test_cus_1",
            "\(portal.body)")
        let plan = try await under.post("/v1/me/subscription/change-plan", json: #"{"price": "price_basic"}"#)
        #expect(plan.status == 200, "\(plan.body)")
        #expect(
            ((APITests.json(plan.body)["subscription"] as? [String: Any])?["price"] as? String) == "price_basic",
            "\(plan.body)")
        let cancel = try await under.post("/v1/me/subscription/cancel", json: #"{"at": "period_end"}"#)
        #expect(
            ((APITests.json(cancel.body)["subscription"] as? [String: Any])?["cancel_at_period_end"] as? Bool) == true,
            "\(cancel.body)")
        let resume = try await under.post("/v1/me/subscription/resume", json: "")
        #expect(
            resume.status == 200
                && ((APITests.json(resume.body)["subscription"] as? [String: Any])?["cancel_at_period_end"] as? Bool)
                    == false,
            "\(resume.body)")
        #expect(
            under.stripe.received.filter { $0.method == "POST" && $0.path == "/v1/subscriptions/sub_1" }.count == 3)
        // A user without a subscription is told so before any job starts (no dead letter to make at will).
        let jobs = try under.startedJobs()
        for path in ["cancel", "resume", "change-plan"] {
            let none = try await under.post(
                "/v1/me/subscription/\(path)", as: "ada",
                json: path == "change-plan" ? #"{"price": "price_pro"}"# : "{}")
            #expect(none.status == 404 && none.body.contains("no subscription"), "\(path): \(none.body)")
        }
        #expect(try under.startedJobs() == jobs)
        // The user cannot choose how a change is prorated.
        let prorated = try await under.post(
            "/v1/me/subscription/change-plan", json: #"{"price": "price_pro", "proration_behavior": "none"}"#)
        #expect(prorated.status == 400, "\(prorated.body)")
    }

    @Test("one user's Stripe actions are limited apart from the API's limit: a burst past it is 429 with Retry-After")
    func actionLimit() async throws {
        let under = try ActionsUnderTest(
            worker: false, waitSeconds: 0.1, environment: ["SLUICE_API_ACTION_RATE_LIMIT": "0.05"])
        var statuses: [Int?] = []
        // One every 20 s, a burst of one: the first starts, the next three wait.
        for _ in 0..<4 { statuses.append(try await under.post("/v1/me/subscription/resume", json: "").status) }
        #expect(statuses == [202, 429, 429, 429], "\(statuses)")
        // Another user, and the reading routes, are not held back by it.
        #expect(try await under.get("/v1/me").status == 200)
        #expect(
            try await under.post(
                "/v1/me/portal-session", as: "ada", json: #"{"return_url": "https://app.sluice.test/a"}"#
            ).status == 202)
    }

    @Test("Stripe's refusal is a 422 action-refused with the job's id and Stripe's reason")
    func stripeRefuses() async throws {
        let under = try ActionsUnderTest()
        under.stripe.script(
            "POST", "/v1/subscriptions/sub_1",
            [
                .init(
                    status: 400,
                    body:
                        #"{"error":{"type":"invalid_request_error","message":"This subscription cannot be canceled"}}"#)
            ])
        let reply = try await under.post("/v1/me/subscription/cancel", json: "{}")
        #expect(reply.status == 422 && reply.body.contains("urn:sluice:problem:action-refused"), "\(reply.body)")
        #expect(reply.body.contains("cannot be canceled"), "\(reply.body)")
        let id = try #require(APITests.json(reply.body)["job_id"] as? Int)
        let job = try await under.get("/v1/jobs/\(id)")
        #expect(APITests.json(job.body)["state"] as? String == "failed", "\(job.body)")
    }

    @Test("with no worker to run it, the route answers 202 with the job's URL, and the job says it is queued")
    func accepted() async throws {
        let under = try ActionsUnderTest(worker: false, waitSeconds: 0.3)
        let reply = try await under.post("/v1/me/subscription/resume", json: "")
        #expect(reply.status == 202, "\(reply.body)")
        let url = try #require(APITests.json(reply.body)["status_url"] as? String)
        #expect(reply.headers.lowercased().contains("location: \(url)"), "\(reply.headers)")
        let job = try await under.get(url)
        #expect(job.status == 200 && APITests.json(job.body)["state"] as? String == "queued", "\(job.body)")
    }

    @Test(
        "a user's subscription changes take turns: 409 while one runs, the same again follows it, a later one replaces one waiting"
    )
    func changesTakeTurns() async throws {
        let under = try ActionsUnderTest(worker: false, waitSeconds: 0.2)
        let owner = try under.api.cluster.connect()
        let plan = try await under.post("/v1/me/subscription/change-plan", json: #"{"price": "price_pro"}"#)
        #expect(plan.status == 202, "\(plan.body)")
        let first = try #require(APITests.json(plan.body)["job_id"] as? Int)
        // At Stripe now (claimed by a worker): a different change waits its turn, told which job to follow.
        try owner.query(
            "UPDATE sluice.jobs SET state = 'running', locked_by = 'test', locked_until = now() + interval '1 minute' "
                + "WHERE id = $1", [first], context: "a worker runs the change")
        let jobs = try under.startedJobs()
        for (path, json) in [("cancel", "{}"), ("resume", ""), ("change-plan", #"{"price": "price_basic"}"#)] {
            let other = try await under.post("/v1/me/subscription/\(path)", json: json)
            #expect(other.status == 409, "\(path): \(other.body)")
            #expect(other.body.contains("urn:sluice:problem:action-pending"), "\(path): \(other.body)")
            #expect(APITests.json(other.body)["job_id"] as? Int == first, "\(path): \(other.body)")
        }
        // A double click is the same request: it follows the pending job and starts nothing.
        let again = try await under.post("/v1/me/subscription/change-plan", json: #"{"price": "price_pro"}"#)
        #expect(again.status == 202 && APITests.json(again.body)["job_id"] as? Int == first, "\(again.body)")
        #expect(try under.startedJobs() == jobs)
        // A session is not a change to the subscription: it is not held back.
        let portal = try await under.post(
            "/v1/me/portal-session", json: #"{"return_url": "https://app.sluice.test/account"}"#)
        #expect(portal.status == 202, "\(portal.body)")
        // Once the change is over, the next one starts; a later one replaces it while it waits, and whoever
        // follows the replaced one is told so.
        try owner.query("DELETE FROM sluice.jobs WHERE id = $1", [first], context: "completing the change")
        let cancel = try await under.post("/v1/me/subscription/cancel", json: "{}")
        let cancelJob = try #require(APITests.json(cancel.body)["job_id"] as? Int)
        #expect(cancel.status == 202 && cancelJob != first, "\(cancel.body)")
        let resume = try await under.post("/v1/me/subscription/resume", json: "")
        let resumeJob = try #require(APITests.json(resume.body)["job_id"] as? Int)
        #expect(resume.status == 202 && resumeJob != cancelJob, "\(resume.body)")
        let replaced = try await under.get("/v1/jobs/\(cancelJob)")
        #expect(APITests.json(replaced.body)["state"] as? String == "failed", "\(replaced.body)")
        #expect(
            (APITests.json(replaced.body)["error"] as? String)?.contains("superseded by job \(resumeJob)") == true,
            "\(replaced.body)")
        #expect(
            try owner.firstValue("SELECT string_agg(kind, ',') FROM sluice.jobs WHERE kind LIKE '%subscription'")
                == "stripe.resume_subscription")
    }
}
