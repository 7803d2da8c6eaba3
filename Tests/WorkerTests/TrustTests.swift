import Foundation
import PGQueue
import TestKit
import Testing

/// What each role of deploy/roles.sql may do, tried the way an attacker would. Roles are cluster-wide, so
/// every test runs on a cluster of its own.
@Suite("trust: roles", .serialized)
struct TrustTests {
    /// A cluster with the schema and deploy/roles.sql applied, and login roles made members of groups.
    final class RoleCluster: Sendable {
        let cluster: Cluster

        init(members: [String: String] = [:]) throws {
            cluster = try Cluster()
            let connection = try cluster.connect()
            let roles = try String(
                contentsOf: Cluster.repositoryRoot.appendingPathComponent("deploy/roles.sql"), encoding: .utf8)
            try connection.run(script: roles, context: "applying deploy/roles.sql")
            for (login, group) in members {
                try connection.run(script: "CREATE ROLE \(login) LOGIN IN ROLE \(group)", context: "a member role")
            }
        }

        func connect(as role: String) throws -> PostgresConnection {
            try PostgresConnection(
                connectionString: cluster.url.replacingOccurrences(of: "://postgres@", with: "://\(role)@"))
        }
    }

    static func refused(_ connection: PostgresConnection, _ sql: String, _ bindings: [(any PostgresBindable)?] = [])
        -> PostgresError?
    {
        do {
            _ = try connection.query(sql, bindings, context: "attempt")
            return nil
        } catch {
            return error
        }
    }

    static let uniqueEnqueue = """
        SELECT job_id FROM sluice.enqueue_unique(ARRAY[$1]::text[], ARRAY[$2::jsonb], ARRAY[$3]::text[],
                                                 ARRAY[$4]::text[], NULL, NULL, NULL, false)
        """

    @Test("sluice_receiver adds only stripe.event and clerk.event jobs in queue webhooks under their event's key")
    func receiverIsConfined() throws {
        let roles = try RoleCluster()
        let receiver = try roles.connect(as: "sluice_receiver")
        let event = #"{"event_id": "evt_1", "body": "{}"}"#
        for (kind, payload, key, queue) in [
            ("stripe.cancel_subscription", event, "stripe:evt_1", "webhooks"),
            ("sluice.noop", #"{"sleep_ms": 86400000}"#, "x", "webhooks"),
            ("stripe.event", event, "periodic:stripe.reconcile:1", "webhooks"),
            ("stripe.event", event, "stripe:evt_2", "webhooks"),
            ("stripe.event", event, "stripe:evt_1", "default"),
            ("clerk.event", event, "stripe:evt_1", "webhooks"),
        ] {
            let error = Self.refused(receiver, Self.uniqueEnqueue, [kind, payload, key, queue])
            #expect(error?.sqlState == "42501", "\(kind) \(key) \(queue): \(String(describing: error))")
        }
        #expect(Self.refused(receiver, Self.uniqueEnqueue, ["stripe.event", event, "stripe:evt_1", "webhooks"]) == nil)
        #expect(try roles.cluster.count("SELECT count(*) FROM sluice.jobs") == 1)
    }

    @Test(
        "an enqueuer adds ordinary kinds only: no webhook events, Stripe actions, owner-only kinds, reserved queues or keys"
    )
    func enqueuerIsConfined() throws {
        let roles = try RoleCluster(members: ["service_a": "sluice_enqueuer", "billing_service": "sluice_billing"])
        let service = try roles.connect(as: "service_a")
        let attempts: [(String, String, String?, Int)] = [
            ("stripe.event", "default", nil, 0), ("clerk.event", "default", nil, 0),
            ("stripe.change_plan", "default", nil, 0), ("usage.record", "default", nil, 0),
            ("stripe.reconcile", "default", nil, 0), ("outbound.deliver", "default", nil, 0),
            ("mail.send", "webhooks", nil, 0), ("mail.send", "outbound", nil, 0),
            ("mail.send", "default", "stripe:evt_1", 0), ("mail.send", "default", "periodic:x:1", 0),
            ("mail.send", "default", "clerk:msg_1", 0), ("mail.send", "default", nil, -1000),
        ]
        for (kind, queue, key, priority) in attempts {
            let error = Self.refused(
                service, "SELECT sluice.enqueue($1, '{}', $2, $3, now(), NULL, $4)", [kind, queue, priority, key])
            #expect(
                error?.sqlState == "42501", "\(kind) \(queue) \(key ?? "-") \(priority): \(String(describing: error))")
        }
        // One bad job refuses the whole batch.
        let batch = Self.refused(
            service, "SELECT sluice.enqueue_many(ARRAY['mail.send', 'stripe.resync'], ARRAY['{}'::jsonb, '{}'::jsonb])")
        #expect(batch?.sqlState == "42501")
        #expect(Self.refused(service, "SELECT sluice.enqueue('mail.send', '{}')") == nil)
        #expect(try roles.cluster.count("SELECT count(*) FROM sluice.jobs") == 1)

        let billing = try roles.connect(as: "billing_service")
        #expect(Self.refused(billing, "SELECT sluice.enqueue('stripe.change_plan', '{}')") == nil)
        #expect(Self.refused(billing, "SELECT sluice.enqueue('usage.record', '{}')") == nil)
        #expect(Self.refused(billing, "SELECT sluice.enqueue('stripe.reconcile', '{}')")?.sqlState == "42501")
    }

    @Test("only the role that enqueued a job reads its result")
    func resultsBelongToTheirEnqueuer() throws {
        let roles = try RoleCluster(members: ["service_a": "sluice_enqueuer", "service_b": "sluice_enqueuer"])
        let serviceA = try roles.connect(as: "service_a")
        let id = try serviceA.query("SELECT sluice.enqueue('mail.send', '{}')", context: "enqueue").single()
            .decode(Int64.self, at: 0)
        try roles.cluster.connect().query(
            "SELECT sluice.record_job_result($1, 'mail.send', '{\"url\": \"https://billing.example/session\"}')", [id],
            context: "a worker records the result")
        let mine = try serviceA.query("SELECT sluice.job_result($1)::text", [id], context: "read").single()
        #expect(try mine.decode(String.self, at: 0).contains("billing.example"))
        let serviceB = try roles.connect(as: "service_b")
        #expect(Self.refused(serviceB, "SELECT sluice.job_result($1)", [id])?.sqlState == "42501")
        // Another id that has no result looks the same as a job still running: nothing to learn.
        #expect(try serviceB.query("SELECT sluice.job_result($1)", [id + 1000], context: "read").single()[0] == nil)
    }

    @Test("operator actions are allowed to sluice_operator only, and recorded with the role and time")
    func operatorActionsAreRecorded() throws {
        let roles = try RoleCluster(members: ["alice": "sluice_operator", "service_a": "sluice_enqueuer"])
        let alice = try roles.connect(as: "alice")
        try alice.query("SELECT sluice.pause_queue('mail')", context: "pause")
        try alice.query("SELECT sluice.resume_queue('mail')", context: "resume")
        #expect(try alice.query("SELECT count(*) FROM sluice.queue_stats", context: "stats").count == 1)
        #expect(Self.refused(alice, "SELECT count(*) FROM sluice.jobs")?.sqlState == "42501")
        let trail = try roles.cluster.connect().query(
            "SELECT role || ':' || action || ':' || target FROM sluice.operator_actions ORDER BY id", context: "trail"
        ).map { row throws(PostgresError) in try row.decode(String.self, at: 0) }
        #expect(trail == ["alice:pause_queue:mail", "alice:resume_queue:mail"])
        let service = try roles.connect(as: "service_a")
        #expect(Self.refused(service, "SELECT sluice.pause_queue('mail')")?.sqlState == "42501")
        #expect(Self.refused(service, "SELECT sluice.retry_dead_kind('stripe.event')")?.sqlState == "42501")
    }

    @Test("every PL/pgSQL function pins its search_path, so nothing in a caller's path can shadow what it calls")
    func searchPathsArePinned() throws {
        let cluster = try Cluster()
        let unpinned = try cluster.connect().query(
            """
            SELECT n.nspname || '.' || p.proname FROM pg_proc p
            JOIN pg_namespace n ON n.oid = p.pronamespace JOIN pg_language l ON l.oid = p.prolang
            WHERE n.nspname IN ('sluice', 'billing') AND l.lanname = 'plpgsql'
              AND NOT coalesce(p.proconfig, '{}') @> ARRAY['search_path=pg_catalog, pg_temp']
            """, context: "unpinned functions"
        ).map { row throws(PostgresError) in try row.decode(String.self, at: 0) }
        #expect(unpinned == [])
    }

    @Test("the schema installs and runs under an owner that is not a superuser")
    func ownerNeedNotBeSuperuser() throws {
        let cluster = try Cluster()
        let admin = try cluster.connect()
        let roles = try String(
            contentsOf: Cluster.repositoryRoot.appendingPathComponent("deploy/roles.sql"), encoding: .utf8)
        try admin.run(script: roles, context: "the administrator's part")
        try admin.run(script: "CREATE ROLE sluice_owner LOGIN NOSUPERUSER", context: "an owner")
        try admin.run(script: "CREATE DATABASE owned OWNER sluice_owner", context: "its database")
        let url =
            String(cluster.url.dropLast("postgres".count)).replacingOccurrences(
                of: "://postgres@", with: "://sluice_owner@") + "owned"
        let migrate = try SluiceProcess(["migrate"], databaseURL: url)
        #expect(migrate.waitForExit(timeout: 60) == 0, "\(migrate.log)")
        let owner = try PostgresConnection(connectionString: url)
        #expect(
            try owner.query("SELECT rolsuper FROM pg_roles WHERE rolname = current_user", context: "who")
                .single().decode(Bool.self, at: 0) == false)
        _ = try JobQueue().enqueue(NewJob(kind: "sluice.noop"), on: owner)
        let worker = try SluiceProcess(databaseURL: url)
        #expect(
            eventually(timeout: 20) {
                (try? owner.query("SELECT count(*) FROM sluice.jobs", context: "left").single().decode(Int.self, at: 0))
                    == 0
            }, "\(worker.log)")
        // The receiver's role got its grants from the migration.
        let receiverURL = url.replacingOccurrences(of: "://sluice_owner@", with: "://sluice_receiver@")
        let receiver = try PostgresConnection(connectionString: receiverURL)
        #expect(
            try receiver.query(
                Self.uniqueEnqueue, ["clerk.event", #"{"event_id": "msg_1"}"#, "clerk:msg_1", "webhooks"],
                context: "enqueue"
            ).count == 1)
        worker.signal(SIGTERM)
        #expect(worker.waitForExit(timeout: 10) == 0)
    }
}

@Suite("trust: usage and test jobs")
struct UsageTrustTests {
    @Test(
        "an idempotency key reused for another user, feature or quantity is refused with SQLSTATE SL409, naming what differs"
    )
    func idempotencyKeysCannotBeBorrowed() throws {
        let cluster = try Cluster()
        let connection = try cluster.connect()
        try connection.run(
            script:
                "INSERT INTO billing.plan_limits (plan, feature, limit_per_period) VALUES ('free', 'img', NULL), ('free', 'api', NULL)",
            context: "free plan")
        let record = "SELECT allowed, repeated FROM billing.record_usage($1, $2, $3, $4)"
        _ = try connection.query(record, ["user_a", "img", 1, "k-1"], context: "first")
        let repeated = try connection.query(record, ["user_a", "img", 1, "k-1"], context: "again").single()
        #expect(try repeated.decode(Bool.self, at: 1))
        for (user, feature, quantity, differs) in [
            ("user_a", "api", 1, "feature"), ("user_b", "img", 1, "user_id"), ("user_a", "img", 5, "quantity"),
        ] {
            let error = TrustTests.refused(connection, record, [user, feature, quantity, "k-1"])
            #expect(error?.sqlState == "SL409", "\(String(describing: error))")
            #expect(error?.message.contains(differs) == true)
            #expect(error?.message.contains("user_a") == false || user == "user_a", "the message names another user")
        }
        #expect(
            try cluster.count(
                "SELECT used::int FROM billing.usage_counters WHERE user_id = 'user_a' AND feature = 'img'") == 1)
    }

    @Test("without SLUICE_TEST_JOBS a sluice.noop sleeps at most a second")
    func noopSleepIsCapped() throws {
        let cluster = try Cluster()
        _ = try JobQueue().enqueue(
            NewJob(kind: "sluice.noop", payload: #"{"sleep_ms": 600000}"#), on: cluster.connect())
        let worker = try SluiceProcess(databaseURL: cluster.url, environment: ["SLUICE_TEST_JOBS": "0"])
        #expect(
            eventually(timeout: 10) { (try? cluster.count("SELECT count(*) FROM sluice.jobs")) == 0 }, "\(worker.log)")
        worker.signal(SIGTERM)
        #expect(worker.waitForExit(timeout: 10) == 0)
    }
}

@Suite("trust: events from the future")
struct FutureEventTests {
    static func stripeEvent(id: String, created: Int) -> String {
        """
        {"id": "\(id)", "type": "customer.updated", "created": \(created), "livemode": false,
         "data": {"object": {"id": "cus_future", "email": "later@example.com", "livemode": false}}}
        """
    }

    @Test("an event dated in 2100 is not applied: its job snoozes, and dies after an hour naming the clock")
    func futureEventWaitsThenDies() async throws {
        let cluster = try Cluster()
        let connection = try cluster.connect()
        let future = Self.stripeEvent(id: "evt_2100", created: 4_102_444_800)
        #expect(
            try connection.query("SELECT billing.apply_stripe_event($1::jsonb)", [future], context: "apply").single()
                .decode(String.self, at: 0).hasPrefix("future:"))
        #expect(try cluster.count("SELECT count(*) FROM billing.processed_events") == 0)

        let queue = JobQueue()
        let id = try queue.enqueue(NewJob(kind: "stripe.event", payload: future), on: connection)
        // Four minutes ahead is within the tolerance: a clock a little behind delays nothing.
        let soon = Self.stripeEvent(id: "evt_soon", created: Int(Date().timeIntervalSince1970) + 240)
        _ = try queue.enqueue(NewJob(kind: "stripe.event", payload: soon), on: connection)
        let worker = try SluiceProcess(databaseURL: cluster.url, environment: ["SLUICE_ADMIN_LISTEN": "127.0.0.1:0"])
        #expect(
            eventually(timeout: 20) {
                (try? cluster.count(
                    "SELECT count(*) FROM sluice.jobs WHERE id = $1 AND run_at > now() + interval '50 minutes'", [id]))
                    == 1
            }, "\(worker.log)")
        #expect(try cluster.count("SELECT count(*) FROM billing.processed_events WHERE event_id = 'evt_2100'") == 0)
        #expect(
            eventually(timeout: 10) {
                (try? cluster.count("SELECT count(*) FROM billing.processed_events WHERE event_id = 'evt_soon'")) == 1
            })
        let port = try #require(worker.listeningPort("Admin server"))
        let metrics = try await ServiceTests.get("http://127.0.0.1:\(port)/metrics")
        #expect(
            metrics.body.contains(#"sluice_jobs_snoozed_total{queue="default",kind="stripe.event"} 1"#),
            "\(metrics.body)")

        // An hour later it is still in the future: it dies, saying why.
        try connection.query(
            "UPDATE sluice.jobs SET created_at = now() - interval '61 minutes', run_at = now() WHERE id = $1", [id],
            context: "an hour passes")
        #expect(eventually(timeout: 20) { (try? cluster.count("SELECT count(*) FROM sluice.dead_letters")) == 1 })
        let reason = try connection.query(
            "SELECT reason, errors -> -1 ->> 'error' FROM sluice.dead_letters WHERE id = $1", [id], context: "why"
        ).single()
        #expect(try reason.decode(String.self, at: 0) == "permanent_failure")
        #expect(try reason.decode(String.self, at: 1).contains("ahead of the database clock"))
        worker.signal(SIGTERM)
        #expect(worker.waitForExit(timeout: 10) == 0)
    }

    @Test("a Clerk event whose updated_at (milliseconds) is in the future waits too")
    func clerkFutureEvent() throws {
        let cluster = try Cluster()
        let later = (Int(Date().timeIntervalSince1970) + 3600) * 1000
        let event = """
            {"type": "user.updated", "timestamp": \(later), "data": {"id": "user_f", "updated_at": \(later)}}
            """
        let outcome = try cluster.connect().query(
            "SELECT billing.apply_clerk_event($1::jsonb, 'msg_f')", [event], context: "apply"
        ).single().decode(String.self, at: 0)
        #expect(outcome.hasPrefix("future:"))
        #expect(try cluster.count("SELECT count(*) FROM billing.users") == 0)
    }
}
