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
                contentsOf: Repository.url("deploy/roles.sql"), encoding: .utf8)
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
        // One job outside the shape, anywhere in a batch, refuses the whole batch.
        let webhook = #"{"event_id": "evt_3", "body": "{}"}"#
        for (kinds, keys) in [
            (["stripe.event", "sluice.noop"], ["stripe:evt_3", "x"]),
            (["sluice.noop", "stripe.event"], ["x", "stripe:evt_3"]),
            (["stripe.event", "stripe.event"], ["stripe:evt_3", "stripe:evt_4"]),
        ] {
            let error = Self.refused(
                receiver,
                """
                SELECT job_id FROM sluice.enqueue_unique($1::text[], ARRAY[$2::jsonb, $2::jsonb], $3::text[],
                                                         ARRAY['webhooks', 'webhooks'], NULL, NULL, NULL, false)
                """, [kinds, webhook, keys])
            #expect(error?.sqlState == "42501", "\(kinds) \(keys): \(String(describing: error))")
        }
        // Without an event id the key cannot be checked against it, so the receiver may not choose the key:
        // otherwise it could hold a periodic job's key, or another service's, and that work would never run.
        for payload in [#"{"body": "{}"}"#, #"{"event_id": null, "body": "{}"}"#] {
            for key in ["periodic:stripe.reconcile:1767225600", "stripe:evt_9", "report:1"] {
                let error = Self.refused(receiver, Self.uniqueEnqueue, ["stripe.event", payload, key, "webhooks"])
                #expect(error?.sqlState == "42501", "\(payload) \(key): \(String(describing: error))")
            }
        }
        // Each safeguard on its own: the shape and the policy answer false, never NULL, for such a job.
        let owner = try roles.cluster.connect()
        let answers = try owner.query(
            """
            SELECT sluice.is_webhook_job('stripe.event', 'webhooks', 'periodic:x', 0, NULL, '{}'),
                   sluice.may_enqueue('sluice_receiver', 'stripe.event', 'webhooks', 'periodic:x', 0, NULL, '{}'),
                   sluice.may_enqueue('sluice_receiver', 'stripe.event', 'webhooks', NULL, 0, NULL, '{}')
            """, context: "the policy's answers"
        ).single()
        #expect(try (0..<3).map { try answers.decode(Bool.self, at: $0) } == [false, false, false])
        #expect(Self.refused(receiver, Self.uniqueEnqueue, ["stripe.event", event, "stripe:evt_1", "webhooks"]) == nil)
        #expect(try roles.cluster.count("SELECT count(*) FROM sluice.jobs") == 1)

        // The receiver's path keeps the policy inlined too (a new backend, so the counts are this transaction's).
        try owner.run(script: "ALTER ROLE sluice_receiver SET track_functions = 'all'", context: "tracking")
        let tracked = try roles.connect(as: "sluice_receiver")
        try tracked.run(script: "BEGIN", context: "begin")
        try tracked.query(
            Self.uniqueEnqueue, ["stripe.event", #"{"event_id": "evt_5"}"#, "stripe:evt_5", "webhooks"],
            context: "enqueue")
        #expect(try Self.policyCalls(on: tracked) == [1, 0])
        try tracked.run(script: "ROLLBACK", context: "rollback")
    }

    /// Calls in this transaction of `authorize_enqueue`, and of the policy's functions, which must be inlined.
    static func policyCalls(on connection: PostgresConnection) throws -> [Int] {
        let calls = try connection.query(
            """
            SELECT coalesce(sum(calls) FILTER (WHERE funcname = 'authorize_enqueue'), 0)::integer,
                   coalesce(sum(calls) FILTER (WHERE funcname IN ('may_enqueue_under_rule', 'may_enqueue',
                                                                  'is_webhook_job', 'member_of')), 0)::integer
            FROM pg_stat_xact_user_functions WHERE schemaname = 'sluice'
            """, context: "function calls"
        ).single()
        return [try calls.decode(Int.self, at: 0), try calls.decode(Int.self, at: 1)]
    }

    @Test("no role of deploy/roles.sql, and not PUBLIC, may write sluice.jobs or run the unique-key protocol")
    func onlyTheOwnerWritesTheQueue() throws {
        // The enqueue functions, not the table, check a job's kind, queue, payload and attempts (schema 20):
        // that holds only while nobody but the owner can write the table or skip to the protocol.
        let roles = try RoleCluster(members: ["service_a": "sluice_enqueuer"])
        let grants = try roles.cluster.connect().query(
            """
            SELECT r || ' on ' || t,
                   has_table_privilege(r, t, 'INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER')
                   OR has_any_column_privilege(r, t, 'INSERT, UPDATE, REFERENCES')
            FROM unnest(ARRAY['public', 'sluice_receiver', 'sluice_api', 'sluice_enqueuer', 'sluice_billing',
                              'sluice_operator', 'service_a']) AS r,
                 unnest(ARRAY['sluice.jobs', 'sluice.unique_keys', 'sluice.kind_rules', 'sluice.kinds',
                              'sluice.dead_letters', 'sluice.settings']) AS t
            UNION ALL
            SELECT r || ' elsewhere',
                   has_function_privilege(r, 'sluice.insert_unique_jobs(text[], jsonb[], text[], text[], integer[], timestamptz[], integer[])', 'EXECUTE')
                   OR has_sequence_privilege(r, 'sluice.jobs_id_seq', 'UPDATE')
                   OR has_schema_privilege(r, 'sluice', 'CREATE')
            FROM unnest(ARRAY['public', 'sluice_receiver', 'sluice_api', 'sluice_enqueuer', 'sluice_billing',
                              'sluice_operator', 'service_a']) AS r
            """, context: "privileges")
        #expect(grants.count == 7 * 6 + 7)
        for row in grants {
            let grant = try row.decode(String.self, at: 0)
            #expect(try row.decode(Bool.self, at: 1) == false, "\(grant)")
        }
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
        // Bad input is named as such before the caller is checked (22023, not 42501).
        let malformed = Self.refused(
            service, "SELECT sluice.enqueue_many(ARRAY['stripe.event', ''], ARRAY['{}'::jsonb, '{}'::jsonb])")
        #expect(malformed?.sqlState == "22023")
        // One bad job refuses the whole batch.
        let batch = Self.refused(
            service, "SELECT sluice.enqueue_many(ARRAY['mail.send', 'stripe.resync'], ARRAY['{}'::jsonb, '{}'::jsonb])")
        #expect(batch?.sqlState == "42501")
        // The API's way of starting a user's changes is the API's alone.
        let exclusive = Self.refused(
            service, "SELECT * FROM sluice.start_exclusive_job_for('user:ada', 'mail.send', '{}', ARRAY['mail.send'])")
        #expect(exclusive?.sqlState == "42501")
        #expect(Self.refused(service, "SELECT sluice.enqueue('mail.send', '{}')") == nil)
        #expect(try roles.cluster.count("SELECT count(*) FROM sluice.jobs") == 1)

        let billing = try roles.connect(as: "billing_service")
        #expect(Self.refused(billing, "SELECT sluice.enqueue('stripe.change_plan', '{}')") == nil)
        #expect(Self.refused(billing, "SELECT sluice.enqueue('usage.record', '{}')") == nil)
        #expect(Self.refused(billing, "SELECT sluice.enqueue('stripe.reconcile', '{}')")?.sqlState == "42501")
    }

    @Test(
        "a kind in sluice.kind_rules is added only by members of its roles: never by the receiver, nobody for no roles"
    )
    func kindRulesConfineTheirKinds() throws {
        let roles = try RoleCluster(members: ["reporter": "sluice_enqueuer", "service_a": "sluice_enqueuer"])
        try roles.cluster.connect().run(
            script: """
                CREATE ROLE reporters;
                GRANT reporters TO reporter;
                INSERT INTO sluice.kind_rules (kind, roles) VALUES
                    ('report.build', ARRAY['a b', '"unterminated', 'ops.team', '', 'reporters', 'sluice_receiver',
                                           'SLUICE_RECEIVER', '"sluice_receiver"']),
                    ('caps.kind', ARRAY['Reporters']),
                    ('vault.open', '{}'),
                    ('ghost.kind', ARRAY['no_such_role']);
                """, context: "rules")
        let reporter = try roles.connect(as: "reporter")
        let service = try roles.connect(as: "service_a")
        let receiver = try roles.connect(as: "sluice_receiver")
        #expect(Self.refused(reporter, "SELECT sluice.enqueue('report.build', '{}')") == nil)
        #expect(Self.refused(service, "SELECT sluice.enqueue('report.build', '{}')")?.sqlState == "42501")
        // Listing sluice_receiver among a kind's roles, under any spelling, does not let the receiver add it.
        let fromReceiver = Self.refused(receiver, Self.uniqueEnqueue, ["report.build", "{}", "report:1", "default"])
        #expect(fromReceiver?.sqlState == "42501")
        // Names are matched exactly: 'Reporters' is no role, whatever an identifier would fold it to.
        for kind in ["vault.open", "ghost.kind", "caps.kind"] {
            #expect(Self.refused(reporter, "SELECT sluice.enqueue($1, '{}')", [kind])?.sqlState == "42501", "\(kind)")
        }
        let batch = Self.refused(
            reporter, "SELECT sluice.enqueue_many(ARRAY['report.build', 'vault.open'], ARRAY['{}', '{}']::jsonb[])")
        #expect(batch?.sqlState == "42501")
        #expect(try roles.cluster.count("SELECT count(*) FROM sluice.jobs") == 1)
        // The policy reads the same through sluice.may_enqueue, as an operator would ask it.
        let owner = try roles.cluster.connect()
        let answers = try owner.query(
            """
            SELECT sluice.may_enqueue('reporter', 'report.build', 'default', NULL, 0, NULL, '{}'),
                   sluice.may_enqueue('service_a', 'report.build', 'default', NULL, 0, NULL, '{}'),
                   sluice.may_enqueue('sluice_receiver', 'report.build', 'default', NULL, 0, NULL, '{}'),
                   sluice.may_enqueue('service_a', 'mail.send', 'default', NULL, 0, NULL, '{}')
            """, context: "policy"
        ).single()
        #expect(try (0..<4).map { try answers.decode(Bool.self, at: $0) } == [true, false, false, true])

        // The policy is inlined into authorize_enqueue's statement, where it stays planned: a policy that
        // runs as a function of its own is planned again by every statement (1.7 million instructions a job).
        try owner.run(script: "ALTER ROLE reporter SET track_functions = 'all'", context: "tracking")
        let tracked = try roles.connect(as: "reporter")
        try tracked.run(script: "BEGIN", context: "begin")
        try tracked.query("SELECT sluice.enqueue('report.build', '{}')", context: "enqueue")
        #expect(try Self.policyCalls(on: tracked) == [1, 0])
        try tracked.run(script: "ROLLBACK", context: "rollback")
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
        let database = try TestDatabase()
        let unpinned = try database.connect().query(
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
            contentsOf: Repository.url("deploy/roles.sql"), encoding: .utf8)
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
        let database = try TestDatabase()
        let connection = try database.connect()
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
            try database.count(
                "SELECT used::int FROM billing.usage_counters WHERE user_id = 'user_a' AND feature = 'img'") == 1)
    }

    @Test("without SLUICE_TEST_JOBS a sluice.noop sleeps at most a second")
    func noopSleepIsCapped() throws {
        let database = try TestDatabase()
        _ = try JobQueue().enqueue(
            NewJob(kind: "sluice.noop", payload: #"{"sleep_ms": 600000}"#), on: database.connect())
        let worker = try SluiceProcess(databaseURL: database.url, environment: ["SLUICE_TEST_JOBS": "0"])
        #expect(
            eventually(timeout: 10) { (try? database.count("SELECT count(*) FROM sluice.jobs")) == 0 }, "\(worker.log)")
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
        let database = try TestDatabase()
        let connection = try database.connect()
        let future = Self.stripeEvent(id: "evt_2100", created: 4_102_444_800)
        #expect(
            try connection.query("SELECT billing.apply_stripe_event($1::jsonb)", [future], context: "apply").single()
                .decode(String.self, at: 0).hasPrefix("future:"))
        #expect(try database.count("SELECT count(*) FROM billing.processed_events") == 0)

        let queue = JobQueue()
        let id = try queue.enqueue(NewJob(kind: "stripe.event", payload: Self.stored(future)), on: connection)
        // Four minutes ahead is within the tolerance: a clock a little behind delays nothing.
        let soon = Self.stripeEvent(id: "evt_soon", created: Int(Date().timeIntervalSince1970) + 240)
        _ = try queue.enqueue(NewJob(kind: "stripe.event", payload: Self.stored(soon)), on: connection)
        let worker = try SluiceProcess(
            databaseURL: database.url,
            environment: ["SLUICE_ADMIN_LISTEN": "127.0.0.1:0", "STRIPE_WEBHOOK_SECRET": WebhookSigning.stripeSecret])
        #expect(
            eventually(timeout: 20) {
                (try? database.count(
                    "SELECT count(*) FROM sluice.jobs WHERE id = $1 AND run_at > now() + interval '50 minutes'", [id]))
                    == 1
            }, "\(worker.log)")
        #expect(try database.count("SELECT count(*) FROM billing.processed_events WHERE event_id = 'evt_2100'") == 0)
        #expect(
            eventually(timeout: 10) {
                (try? database.count("SELECT count(*) FROM billing.processed_events WHERE event_id = 'evt_soon'")) == 1
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
        #expect(eventually(timeout: 20) { (try? database.count("SELECT count(*) FROM sluice.dead_letters")) == 1 })
        let reason = try connection.query(
            "SELECT reason, errors -> -1 ->> 'error' FROM sluice.dead_letters WHERE id = $1", [id], context: "why"
        ).single()
        #expect(try reason.decode(String.self, at: 0) == "permanent_failure")
        #expect(try reason.decode(String.self, at: 1).contains("ahead of the database clock"))
        worker.signal(SIGTERM)
        #expect(worker.waitForExit(timeout: 10) == 0)
    }

    /// The payload the receiver stores for a signed delivery of `event`.
    static func stored(_ event: String) -> String {
        let body = Array(event.utf8)
        let payload: [String: Any] = [
            "event_id": "evt", "body": event, "headers": ["stripe-signature": WebhookSigning.stripeHeader(body)],
        ]
        return String(decoding: try! JSONSerialization.data(withJSONObject: payload), as: UTF8.self)
    }

    @Test("a Clerk event whose updated_at (milliseconds) is in the future waits too")
    func clerkFutureEvent() throws {
        let database = try TestDatabase()
        let later = (Int(Date().timeIntervalSince1970) + 3600) * 1000
        let event = """
            {"type": "user.updated", "timestamp": \(later), "data": {"id": "user_f", "updated_at": \(later)}}
            """
        let outcome = try database.connect().query(
            "SELECT billing.apply_clerk_event($1::jsonb, 'msg_f')", [event], context: "apply"
        ).single().decode(String.self, at: 0)
        #expect(outcome.hasPrefix("future:"))
        #expect(try database.count("SELECT count(*) FROM billing.users") == 0)
    }
}

/// Stripe's `created` is whole seconds, so two events of one subscription often share it. Every pair of
/// statuses, in both orders, must end in the same state, and access must follow it.
@Suite("trust: same-second ties")
struct SameSecondTieTests {
    static let statuses = [
        "incomplete", "incomplete_expired", "trialing", "active", "past_due", "unpaid", "canceled", "paused",
    ]
    let events = BillingEvents()

    func event(_ id: String, _ type: String, subscription: String, customer: String, status: String, left: String?)
        -> String
    {
        var object = events.subscription(
            status: status, price: events.price("price_basic", amount: 1200, lookupKey: "basic"), id: subscription,
            customer: customer)
        object["id"] = subscription
        var data: [String: Any] = ["object": object]
        if let left { data["previous_attributes"] = ["status": left] }
        let envelope: [String: Any] = [
            "id": id, "object": "event", "type": type, "created": events.start + 600, "livemode": false, "data": data,
        ]
        return String(decoding: BillingEvents.json(envelope), as: UTF8.self)
    }

    static func expectedAccess(_ status: String) -> Bool { ["active", "trialing", "past_due"].contains(status) }

    @Test(
        "a transition (previous_attributes) and the state it left, in the same second, end in the transition's state in either order"
    )
    func transitionsWin() throws {
        let database = try TestDatabase()
        let connection = try database.connect()
        try connection.run(
            script: "UPDATE billing.settings SET value = '100000 days' WHERE key = 'past_due_grace_period'",
            context: "a grace period that covers the test's dates")
        var failures: [String] = []
        for from in Self.statuses {
            for to in Self.statuses where to != from {
                for reversed in [false, true] {
                    let tag = "\(from)_\(to)_\(reversed ? "r" : "f")"
                    let customer = "cus_\(tag)"
                    let user = "user_\(tag)"
                    let link = events.stripe(
                        "link_\(tag)", "customer.created", at: 0,
                        ["id": customer, "object": "customer", "metadata": ["clerk_user_id": user]])
                    try BillingEvents.apply(link, on: connection)
                    let created = event(
                        "evt_c_\(tag)", "customer.subscription.created", subscription: "sub_\(tag)", customer: customer,
                        status: from, left: nil)
                    let updated = event(
                        "evt_u_\(tag)", "customer.subscription.updated", subscription: "sub_\(tag)", customer: customer,
                        status: to, left: from)
                    for body in reversed ? [updated, created] : [created, updated] {
                        try connection.query("SELECT billing.apply_stripe_event($1::jsonb)", [body], context: "apply")
                    }
                    let row = try connection.query(
                        """
                        SELECT s.status, a.has_access, a.reason FROM billing.subscriptions s, billing.access_of($2) a
                        WHERE s.id = $1
                        """, ["sub_\(tag)", user], context: "state"
                    ).single()
                    let status = try row.decode(String.self, at: 0)
                    let access = try row.decode(Bool.self, at: 1)
                    let reason = try row.decode(String?.self, at: 2)
                    if status != to || access != Self.expectedAccess(to) || !(reason ?? "").contains(to) {
                        failures.append("\(tag): \(status) access=\(access) reason=\(reason ?? "NULL")")
                    }
                }
            }
        }
        #expect(failures == [], "\(failures.count) of \(Self.statuses.count * (Self.statuses.count - 1) * 2)")
    }

    @Test("without previous_attributes the later state in the lifecycle wins a tie in either order")
    func ranksDecide() throws {
        let database = try TestDatabase()
        let connection = try database.connect()
        let rank: [String: Int] = [
            "incomplete": 1, "incomplete_expired": 3, "canceled": 3, "trialing": 2, "active": 2, "past_due": 2,
            "unpaid": 2, "paused": 2,
        ]
        var failures: [String] = []
        for first in Self.statuses {
            for second in Self.statuses where rank[first]! < rank[second]! {
                for reversed in [false, true] {
                    let tag = "\(first)_\(second)_\(reversed ? "r" : "f")"
                    let a = event(
                        "evt_a_\(tag)", "customer.subscription.updated", subscription: "sub_\(tag)", customer: "cus_x",
                        status: first, left: nil)
                    let b = event(
                        "evt_b_\(tag)", "customer.subscription.updated", subscription: "sub_\(tag)", customer: "cus_x",
                        status: second, left: nil)
                    for body in reversed ? [b, a] : [a, b] {
                        try connection.query("SELECT billing.apply_stripe_event($1::jsonb)", [body], context: "apply")
                    }
                    let status = try connection.query(
                        "SELECT status FROM billing.subscriptions WHERE id = $1", ["sub_\(tag)"], context: "state"
                    ).single().decode(String.self, at: 0)
                    if status != second { failures.append("\(tag): \(status)") }
                }
            }
        }
        #expect(failures == [])
    }
}

@Suite("trust: erasure")
struct ErasureTests {
    static func apply(_ connection: PostgresConnection, _ event: String, clerkID: String? = nil) throws {
        if let clerkID {
            try connection.query("SELECT billing.apply_clerk_event($1::jsonb, $2)", [event, clerkID], context: "apply")
        } else {
            try connection.query("SELECT billing.apply_stripe_event($1::jsonb)", [event], context: "apply")
        }
    }

    static func user(_ id: String, type: String, updatedAt: Int, email: String) -> String {
        """
        {"type": "\(type)", "timestamp": \(updatedAt), "data": {"id": "\(id)", "first_name": "Ada", "last_name": "L",
         "updated_at": \(updatedAt), "created_at": 1700000000000, "primary_email_address_id": "e1",
         "email_addresses": [{"id": "e1", "email_address": "\(email)"}]}}
        """
    }

    static func customer(_ id: String, type: String, created: Int, email: String, user: String?) -> String {
        let metadata = user.map { #"{"clerk_user_id": "\#($0)"}"# } ?? "{}"
        return """
            {"id": "evt_\(id)_\(created)", "type": "\(type)", "created": \(created), "livemode": false,
             "data": {"object": {"id": "\(id)", "email": "\(email)", "name": "Ada L", "livemode": false,
                                 "metadata": \(metadata)}}}
            """
    }

    @Test(
        "user.deleted erases the person everywhere for good: user, linked customer, audit log, waiting jobs, dead letters, results"
    )
    func erasureIsComplete() throws {
        let database = try TestDatabase()
        let connection = try database.connect()
        try Self.apply(
            connection,
            Self.customer(
                "cus_e", type: "customer.created", created: 1_700_000_000, email: "ada@example.com", user: "user_e"))
        try Self.apply(
            connection,
            Self.user("user_e", type: "user.created", updatedAt: 1_700_000_000_000, email: "ada@example.com"),
            clerkID: "msg_1")
        let queue = JobQueue()
        let invoiceBody =
            #"{"id": "evt_inv", "type": "invoice.paid", "data": {"object": {"customer": "cus_e", "customer_email": "ada@example.com"}}}"#
        let payload = String(
            decoding: try JSONSerialization.data(withJSONObject: ["event_id": "evt_inv", "body": invoiceBody]),
            as: UTF8.self)
        let waiting = try queue.enqueue(
            NewJob(kind: "stripe.event", payload: payload, queue: "webhooks"), on: connection)
        let other = try queue.enqueue(
            NewJob(kind: "mail.send", payload: #"{"user_id": "user_e2", "email": "grace@example.com"}"#), on: connection
        )
        try connection.run(
            script: """
                INSERT INTO sluice.dead_letters (id, queue, kind, payload, attempt, max_attempts, reason, created_at)
                VALUES (-1, 'default', 'mail.send', '{"user_id": "user_e", "email": "ada@example.com"}', 1, 1,
                        'permanent_failure', now());
                INSERT INTO sluice.job_results (job_id, kind, result)
                VALUES (-2, 'stripe.create_portal_session', '{"customer": "cus_e", "url": "https://billing.example/ada"}');
                """, context: "a dead letter and a result about the user")

        try Self.apply(
            connection,
            #"{"type": "user.deleted", "timestamp": 1700000500000, "data": {"id": "user_e", "deleted": true}}"#,
            clerkID: "msg_2")

        func count(_ sql: String) throws -> Int { try database.count(sql) }
        #expect(try count("SELECT count(*) FROM billing.users WHERE email IS NOT NULL OR first_name IS NOT NULL") == 0)
        #expect(try count("SELECT count(*) FROM billing.customers WHERE email IS NOT NULL OR name IS NOT NULL") == 0)
        #expect(
            try count("SELECT count(*) FROM billing.audit_log WHERE (before::text || after::text) LIKE '%example.com%'")
                == 0)
        #expect(try count("SELECT count(*) FROM sluice.jobs WHERE payload::text LIKE '%ada@example.com%'") == 0)
        #expect(try count("SELECT count(*) FROM sluice.dead_letters WHERE payload::text LIKE '%ada@example.com%'") == 0)
        #expect(try count("SELECT count(*) FROM sluice.job_results") == 0)
        #expect(
            try count("SELECT count(*) FROM sluice.dead_letters WHERE id = \(waiting) AND reason = 'erased'") == 1)
        // Another user's job, whose id merely starts the same, is untouched.
        #expect(try count("SELECT count(*) FROM sluice.jobs WHERE id = \(other)") == 1)

        // Later events bring nothing back: a newer user.updated, a customer.updated.
        try Self.apply(
            connection,
            Self.user("user_e", type: "user.updated", updatedAt: 1_700_000_900_000, email: "ada@new.example"),
            clerkID: "msg_3")
        try Self.apply(
            connection,
            Self.customer(
                "cus_e", type: "customer.updated", created: 1_700_000_900, email: "ada@new.example", user: nil))
        #expect(try count("SELECT count(*) FROM billing.users WHERE email IS NOT NULL OR first_name IS NOT NULL") == 0)
        #expect(try count("SELECT count(*) FROM billing.customers WHERE email IS NOT NULL OR name IS NOT NULL") == 0)
        #expect(
            try count("SELECT count(*) FROM billing.audit_log WHERE (before::text || after::text) LIKE '%example%'")
                == 0)
    }

    @Test("customer.deleted erases that customer's email and name, and its audit entries")
    func customerDeletion() throws {
        let database = try TestDatabase()
        let connection = try database.connect()
        try Self.apply(
            connection,
            Self.customer(
                "cus_d", type: "customer.created", created: 1_700_000_000, email: "bob@example.com", user: nil))
        try Self.apply(
            connection,
            Self.customer(
                "cus_d", type: "customer.deleted", created: 1_700_000_100, email: "bob@example.com", user: nil))
        #expect(
            try database.count("SELECT count(*) FROM billing.customers WHERE email IS NOT NULL OR name IS NOT NULL")
                == 0
        )
        #expect(
            try database.count(
                "SELECT count(*) FROM billing.audit_log WHERE (before::text || after::text) LIKE '%bob@%'") == 0)
    }
}

@Suite("trust: forged events")
struct ForgedEventTests {
    let events = BillingEvents()

    static func payload(_ object: [String: Any]) -> String {
        String(decoding: try! JSONSerialization.data(withJSONObject: object), as: UTF8.self)
    }

    @Test(
        "a webhook event job changes billing only when its stored raw body and headers verify, or Sluice fetched it itself; forged ones die saying so"
    )
    func forgedEventsDie() throws {
        let run = try BillingRun()
        let connection = try run.connect()
        let queue = JobQueue()
        let subscription = events.stripe(
            "forged_sub", "customer.subscription.created", at: 2,
            events.subscription(
                status: "active", price: events.price("price_basic", amount: 1200, lookupKey: "basic"),
                customer: "cus_g"))
        let body = String(decoding: subscription.body, as: UTF8.self)
        // Receiver-shaped, with a signature nobody holds the secret of.
        _ = try queue.enqueue(
            NewJob(
                kind: "stripe.event",
                payload: Self.payload([
                    "event_id": "evt_forged_sub", "body": body,
                    "headers": ["stripe-signature": "t=1790000000,v1=" + String(repeating: "ab", count: 32)],
                ]), queue: "webhooks"), on: connection)
        // The bare event, as if an operator or a restored dump had put it there.
        _ = try queue.enqueue(NewJob(kind: "stripe.event", payload: body, queue: "webhooks"), on: connection)
        // A Clerk event signed with another secret.
        let user = events.clerk(
            "forged_user", "user.created", at: 2,
            events.user("user_g", email: "mallory@example.com", first: "M", last: "X", updatedMinute: 2))
        var headers: [String: String] = [:]
        let otherSecret = "whsec_" + Data(repeating: 9, count: 32).base64EncodedString()
        for (name, value) in WebhookSigning.svixHeaders(user.body, id: user.eventID, secrets: [otherSecret]) {
            headers[name] = value
        }
        _ = try queue.enqueue(
            NewJob(
                kind: "clerk.event",
                payload: Self.payload([
                    "event_id": user.eventID, "body": String(decoding: user.body, as: UTF8.self), "headers": headers,
                ]), queue: "webhooks"), on: connection)
        // What reconciliation enqueues: fetched from Stripe by Sluice, owner-only, applied without a signature.
        let fetched = events.stripe(
            "fetched_customer", "customer.created", at: 1,
            ["id": "cus_f", "object": "customer", "metadata": ["clerk_user_id": "user_f"]])
        _ = try queue.enqueue(
            NewJob(
                kind: "stripe.fetched_event",
                payload: Self.payload([
                    "source": "reconcile", "event_id": "evt_fetched_customer",
                    "body": String(decoding: fetched.body, as: UTF8.self),
                ]), queue: "webhooks"), on: connection)
        // And one genuine delivery.
        let genuine = events.stripe(
            "genuine_customer", "customer.created", at: 1,
            ["id": "cus_g", "object": "customer", "metadata": ["clerk_user_id": "user_g"]])
        try run.process([genuine])

        #expect(try connection.firstValue("SELECT count(*)::text FROM billing.subscriptions") == "0")
        #expect(try connection.firstValue("SELECT count(*)::text FROM billing.users") == "0")
        #expect(
            try connection.firstValue(
                "SELECT string_agg(customer_id, ',' ORDER BY customer_id) FROM billing.customer_links")
                == "cus_f,cus_g")
        let reasons = try connection.query(
            "SELECT kind, reason, errors -> -1 ->> 'error' FROM sluice.dead_letters ORDER BY id", context: "dead"
        ).map { row throws(PostgresError) in
            "\(try row.decode(String.self, at: 0)) \(try row.decode(String.self, at: 1)): \(try row.decode(String.self, at: 2))"
        }
        #expect(reasons.count == 3, "\(reasons)")
        #expect(reasons.allSatisfy { $0.contains("permanent_failure") && $0.contains("the event is not applied") })
        #expect(reasons[0].contains("stored signature does not verify"), "\(reasons)")
        #expect(reasons[1].contains("not a delivery the receiver stored"), "\(reasons)")
        #expect(reasons[2].hasPrefix("clerk.event") && reasons[2].contains("does not verify"), "\(reasons)")
    }

    @Test("a worker without webhook secrets claims nothing from queue webhooks, says so once, and runs the rest")
    func noSecretsNoWebhooks() throws {
        let database = try TestDatabase()
        let queue = JobQueue()
        let connection = try database.connect()
        let webhook = try queue.enqueue(
            NewJob(kind: "stripe.event", payload: #"{"event_id": "evt_x"}"#, queue: "webhooks"), on: connection)
        _ = try queue.enqueue(NewJob(kind: "sluice.noop"), on: connection)
        let worker = try SluiceProcess(
            databaseURL: database.url, environment: ["STRIPE_WEBHOOK_SECRET": "", "CLERK_WEBHOOK_SECRET": ""])
        #expect(
            eventually(timeout: 15) {
                (try? database.count("SELECT count(*) FROM sluice.jobs WHERE queue = 'default'")) == 0
            })
        Thread.sleep(forTimeInterval: 2)
        #expect(try database.count("SELECT count(*) FROM sluice.jobs WHERE id = $1 AND attempt = 0", [webhook]) == 1)
        #expect(worker.log.components(separatedBy: "Not claiming from a queue").count == 2, "\(worker.log)")
        worker.signal(SIGTERM)
        #expect(worker.waitForExit(timeout: 10) == 0)
    }
}
