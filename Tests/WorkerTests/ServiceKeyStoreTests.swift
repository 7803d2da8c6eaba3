import Foundation
import PGQueue
import TestKit
import Testing

@testable import Worker

/// Service keys against PostgreSQL: `sluice keys` and what the API's role may see.
@Suite("service keys")
struct ServiceKeyStoreTests {
    @Test("sluice keys create prints the key once; the database keeps only its hash; list and revoke work")
    func keysCommand() throws {
        let database = try TestDatabase()
        let create = try SluiceProcess(
            ["keys", "create", "--name", "billing-service", "--scopes", "usage:write,access:read"],
            databaseURL: database.url)
        #expect(create.waitForExit(timeout: 20) == 0, "\(create.log)")
        let secret = try #require(create.log.split(separator: "\n").first { $0.hasPrefix("sk_sluice_") })
        #expect(create.log.components(separatedBy: String(secret)).count == 2, "printed once")

        let dump = try database.connect().firstValue(
            "SELECT coalesce(string_agg(to_jsonb(k)::text, ''), '') FROM sluice.api_keys k")
        #expect(
            dump?.contains(String(secret.dropFirst("sk_sluice_".count).suffix(30))) == false,
            "no part past the prefix is stored")

        let store = ServiceKeyStore(connection: try database.connect())
        let caller = try #require(try store.authenticate(String(secret)))
        #expect(caller.name == "billing-service" && caller.scopes == ["access:read", "usage:write"])
        #expect(try store.authenticate(String(secret) + "x") == nil)
        #expect(try store.authenticate("sk_sluice_" + String(repeating: "A", count: 43)) == nil)

        let list = try SluiceProcess(["keys", "list"], databaseURL: database.url)
        #expect(list.waitForExit(timeout: 20) == 0)
        #expect(list.log.contains("billing-service") && !list.log.contains(String(secret)), "\(list.log)")

        let revoke = try SluiceProcess(["keys", "revoke", "\(caller.id)"], databaseURL: database.url)
        #expect(revoke.waitForExit(timeout: 20) == 0, "\(revoke.log)")
        #expect(try store.authenticate(String(secret)) == nil, "a revoked key is refused at once")
        let again = try SluiceProcess(["keys", "revoke", "\(caller.id)"], databaseURL: database.url)
        #expect(again.waitForExit(timeout: 20) == 1)

        let bad = try SluiceProcess(["keys", "create", "--name", "x", "--scopes", "admin"], databaseURL: database.url)
        #expect(bad.waitForExit(timeout: 20) != 0)
        #expect(bad.log.contains("\"admin\" is not a scope"), "\(bad.log)")
    }

    @Test("a key's last use is written at most once a minute")
    func lastUsed() throws {
        let database = try TestDatabase()
        let store = ServiceKeyStore(connection: try database.connect())
        let key = ServiceKey.generate()
        _ = try store.create(key, name: "s", scopes: ["access:read"])
        _ = try store.authenticate(key.secret)
        let first = try database.connect().firstValue("SELECT last_used_at::text FROM sluice.api_keys")
        #expect(first != nil)
        _ = try store.authenticate(key.secret)
        #expect(try database.connect().firstValue("SELECT last_used_at::text FROM sluice.api_keys") == first)
        try database.connect().run(
            script: "UPDATE sluice.api_keys SET last_used_at = now() - interval '2 minutes'", context: "age")
        _ = try store.authenticate(key.secret)
        #expect(
            try database.connect().firstValue(
                "SELECT (last_used_at > now() - interval '5 seconds')::text FROM sluice.api_keys") == "true")
    }

    @Test("the API's role checks keys and reads access and invoices through functions; the tables stay closed")
    func apiRole() throws {
        let cluster = try Cluster()
        try cluster.connect().run(script: Repository.text("deploy/roles.sql"), context: "applying deploy/roles.sql")
        let key = ServiceKey.generate()
        _ = try ServiceKeyStore(connection: try cluster.connect()).create(key, name: "s", scopes: ["usage:write"])
        let api = try PostgresConnection(
            connectionString: cluster.url.replacingOccurrences(of: "://postgres@", with: "://sluice_api@"))
        #expect(try ServiceKeyStore(connection: api).authenticate(key.secret)?.scopes == ["usage:write"])
        #expect(throws: PostgresError.self) {
            try api.query("SELECT count(*) FROM sluice.api_keys", context: "reading keys")
        }
        #expect(throws: PostgresError.self) {
            try api.query("UPDATE sluice.api_keys SET revoked_at = NULL", context: "unrevoking")
        }
        // What the API answers comes from two functions it may call; the tables behind them stay closed.
        #expect(try api.firstValue("SELECT billing.api_access('ada')::text")?.contains("\"user_id\": \"ada\"") == true)
        #expect(try api.firstValue("SELECT billing.api_invoices('ada', 5)::text") == #"{"invoices": []}"#)
        #expect(throws: PostgresError.self) {
            try api.query("SELECT count(*) FROM billing.invoices", context: "reading invoices")
        }
        let receiver = try PostgresConnection(
            connectionString: cluster.url.replacingOccurrences(of: "://postgres@", with: "://sluice_receiver@"))
        #expect(throws: PostgresError.self) { try ServiceKeyStore(connection: receiver).authenticate(key.secret) }
    }

    @Test(
        "the API's role starts only the kinds it may, only through start_job_for, and reads only its own callers' jobs")
    func apiRoleJobs() throws {
        let cluster = try Cluster()
        try cluster.connect().run(script: Repository.text("deploy/roles.sql"), context: "applying deploy/roles.sql")
        let api = try PostgresConnection(
            connectionString: cluster.url.replacingOccurrences(of: "://postgres@", with: "://sluice_api@"))
        func refusal(_ sql: String) -> String? {
            do {
                try api.query(sql, context: "as sluice_api")
                return nil
            } catch {
                return error.sqlState
            }
        }
        // Every job the API starts has its caller recorded: plain enqueue is closed to it.
        #expect(refusal("SELECT sluice.enqueue('stripe.change_plan', '{}')") == "42501")
        #expect(refusal("SELECT sluice.enqueue_many(ARRAY['stripe.change_plan'], ARRAY['{}'::jsonb])") == "42501")
        #expect(refusal("SELECT sluice.start_job_for('user:ada', 'stripe.resync', '{}')") == "42501", "owner-only kind")
        #expect(refusal("SELECT sluice.start_job_for('user:ada', 'sluice.noop', '{}')") == "42501", "not an API kind")
        #expect(refusal("SELECT sluice.start_job_for('admin', 'stripe.change_plan', '{}')") == "22023")
        #expect(refusal("SELECT count(*) FROM sluice.job_callers") == "42501")
        let id = try #require(
            try api.firstValue("SELECT sluice.start_job_for('user:ada', 'stripe.resume_subscription', '{}')"))
        #expect(try api.firstValue("SELECT sluice.job_for(\(id), 'user:ada') ->> 'state'") == "queued")
        #expect(try api.firstValue("SELECT sluice.job_for(\(id), 'user:bob')") == nil)
        // Changes that take turns go through the same checks, whatever is pending (ada's resume is), over
        // every kind a start may replace; and a later one replaces a change still waiting.
        let turns = "ARRAY['stripe.resume_subscription', 'stripe.cancel_subscription']"
        let withOwnerOnly = "ARRAY['stripe.resume_subscription', 'stripe.cancel_subscription', 'stripe.resync']"
        #expect(
            refusal("SELECT sluice.start_exclusive_job_for('user:ada', 'stripe.resync', '{}', \(withOwnerOnly))")
                == "42501", "owner-only kind")
        #expect(
            refusal(
                "SELECT sluice.start_exclusive_job_for('user:ada', 'stripe.cancel_subscription', '{}', \(withOwnerOnly))"
            ) == "42501", "replacing an owner-only kind")
        #expect(
            refusal("SELECT sluice.start_exclusive_job_for('admin', 'stripe.cancel_subscription', '{}', \(turns))")
                == "22023")
        #expect(
            try api.firstValue(
                "SELECT started::text FROM "
                    + "sluice.start_exclusive_job_for('user:ada', 'stripe.cancel_subscription', '{}', \(turns))")
                == "true")
        #expect(try api.firstValue("SELECT sluice.job_for(\(id), 'user:ada') ->> 'state'") == "failed")
        // Another role that may start the same kinds does not see the API's jobs.
        let billing = try cluster.connect()
        try billing.run(
            script: "CREATE ROLE other_billing LOGIN IN ROLE sluice_billing; GRANT EXECUTE ON FUNCTION "
                + "sluice.job_for(bigint, text) TO other_billing", context: "another billing role")
        let other = try PostgresConnection(
            connectionString: cluster.url.replacingOccurrences(of: "://postgres@", with: "://other_billing@"))
        #expect(try other.firstValue("SELECT sluice.job_for(\(id), 'user:ada')") == nil)
    }
}
