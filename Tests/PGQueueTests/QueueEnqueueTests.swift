import Foundation
import PGQueue
import TestKit
import Testing

@Suite("enqueueing, uniqueness and wake-ups")
struct QueueEnqueueTests {
    @Test("a payload that is not a JSON object is refused with a clear message")
    func malformedPayload() throws {
        let database = try TestDatabase()
        let connection = try database.connect()
        for payload in ["[1, 2]", "42", "\"text\"", "null"] {
            let error = try #require(throws: PostgresError.self) {
                try connection.query("SELECT sluice.enqueue('k', $1::jsonb)", [payload], context: "enqueue")
            }
            #expect(error.sqlState == "22023")
            #expect(error.message.contains("payload must be a JSON object"))
        }
        let badJSON = try #require(throws: PostgresError.self) {
            try JobQueue().enqueue(NewJob(kind: "k", payload: "{not json"), on: connection)
        }
        #expect(badJSON.sqlState == "22P02")
        let zeroAttempts = try #require(throws: PostgresError.self) {
            try JobQueue().enqueue(NewJob(kind: "k", maxAttempts: 0), on: connection)
        }
        #expect(zeroAttempts.message.contains("max_attempts must be at least 1"))
        #expect(
            try connection.query("SELECT count(*) FROM sluice.jobs", context: "count").single().decode(Int.self, at: 0)
                == 0)
    }

    /// sluice.jobs checks only the queue's own invariants (a table's CHECK expressions are planned again for
    /// every statement), so each enqueue function must refuse bad input itself, before anything is written.
    @Test(
        "every enqueue function refuses an empty kind or queue, a non-object payload or max_attempts below 1 itself",
        arguments: [
            ("kind ''", "", "{}", "default", nil),
            ("kind NULL", nil, "{}", "default", nil),
            ("queue ''", "k", "{}", "", nil),
            ("payload [1]", "k", "[1]", "default", nil),
            ("payload null", "k", "null", "default", nil),
            ("max_attempts 0", "k", "{}", "default", 0),
            ("max_attempts -3", "k", "{}", "default", -3),
        ] as [(String, String?, String, String, Int?)])
    func everyEnqueueFunctionChecksItsInput(
        _ label: String, kind: String?, payload: String, queue: String, maxAttempts: Int?
    ) throws {
        let database = try TestDatabase()
        let connection = try database.connect()
        // Each batch holds a good job before the bad one: the whole statement must add nothing.
        let calls = [
            "SELECT sluice.enqueue($1, $2::jsonb, queue => $3, max_attempts => $4)",
            """
            SELECT * FROM sluice.enqueue_many(ARRAY['k', $1], ARRAY['{}', $2]::jsonb[], ARRAY['default', $3],
                                              max_attempts => ARRAY[NULL, $4::integer])
            """,
            // With a unique key, enqueue_many takes the protocol of sluice.enqueue, job by job.
            """
            SELECT * FROM sluice.enqueue_many(ARRAY['k', $1], ARRAY['{}', $2]::jsonb[], ARRAY['default', $3],
                                              max_attempts => ARRAY[NULL, $4::integer], unique_keys => ARRAY[NULL, 'u2'])
            """,
            """
            SELECT * FROM sluice.enqueue_unique(ARRAY['k', $1], ARRAY['{}', $2]::jsonb[], ARRAY['u1', 'u2'],
                                                ARRAY['default', $3], max_attempts => ARRAY[NULL, $4::integer])
            """,
        ]
        for call in calls {
            let error = try #require(throws: PostgresError.self, "\(label): \(call)") {
                try connection.query(call, [kind, payload, queue, maxAttempts], context: "enqueue")
            }
            #expect(error.sqlState == "22023", "\(label): \(call) gave \(error)")
        }
        #expect(
            try connection.query("SELECT count(*) FROM sluice.jobs", context: "count").single().decode(Int.self, at: 0)
                == 0)
    }

    @Test("a kind's default max_attempts comes from sluice.kinds")
    func kindDefaults() throws {
        let database = try TestDatabase()
        let connection = try database.connect()
        try connection.query("INSERT INTO sluice.kinds (kind, max_attempts) VALUES ('mail', 4)", context: "setup")
        let queue = JobQueue()
        _ = try queue.enqueue([NewJob(kind: "mail"), NewJob(kind: "other")], on: connection)
        _ = try queue.enqueue(NewJob(kind: "mail", queue: "q2"), on: connection)
        let jobs =
            try queue.claim(from: "default", limit: 10, on: connection)
            + queue.claim(from: "q2", limit: 1, on: connection)
        #expect(jobs.map(\.maxAttempts) == [4, 20, 4])
    }

    @Test("concurrent enqueues of one unique key make one job")
    func uniqueUnderConcurrency() throws {
        let database = try TestDatabase()
        let ids = Box<[Int64]>([])
        try onThreads(16) { _ in
            let connection = try database.connect()
            let id = try JobQueue().enqueue(NewJob(kind: "stripe.event", uniqueKey: "stripe:evt_1"), on: connection)
            ids.value.withLock { $0.append(id) }
        }
        let all = ids.value.withLock { $0 }
        #expect(all.count == 16)
        #expect(Set(all).count == 1)
        let connection = try database.connect()
        #expect(
            try connection.query("SELECT count(*) FROM sluice.jobs", context: "count").single().decode(Int.self, at: 0)
                == 1)
    }

    @Test("a unique key is remembered after its job completes, for the retention period only")
    func uniqueAfterCompletion() throws {
        let database = try TestDatabase()
        let connection = try database.connect()
        let queue = JobQueue(uniqueRetentionSeconds: 3600)
        let id = try queue.enqueue(NewJob(kind: "k", uniqueKey: "evt_a"), on: connection)
        let job = try #require(try queue.claim(from: "default", limit: 1, on: connection).first)
        #expect(try queue.complete([job.lease], on: connection) == [id])
        #expect(try queue.enqueue(NewJob(kind: "k", uniqueKey: "evt_a"), on: connection) == id)
        #expect(try queue.claim(from: "default", limit: 1, on: connection).isEmpty)

        // Once the retention has passed the key is free again, and pruning removes it.
        try connection.query("UPDATE sluice.unique_keys SET expires_at = now() - interval '1 second'", context: "age")
        #expect(try queue.pruneUniqueKeys(on: connection) == 1)
        let again = try queue.enqueue(NewJob(kind: "k", uniqueKey: "evt_a"), on: connection)
        #expect(again != id)
        // An expired key that was not pruned yet is taken over too.
        let next = try #require(try queue.claim(from: "default", limit: 1, on: connection).first)
        try queue.complete([next.lease], on: connection)
        try connection.query("UPDATE sluice.unique_keys SET expires_at = now() - interval '1 second'", context: "age")
        #expect(try queue.enqueue(NewJob(kind: "k", uniqueKey: "evt_a"), on: connection) > again)
    }

    @Test("bulk enqueue returns ids in order and notifies once per queue")
    func bulkEnqueue() throws {
        let database = try TestDatabase()
        let recorder = try NotificationRecorder(url: database.url)
        let connection = try database.connect()
        let jobs = (0..<500).map { NewJob(kind: "k", payload: "{\"n\": \($0)}", queue: $0 % 2 == 0 ? "even" : "odd") }
        let ids = try JobQueue().enqueue(jobs, on: connection)
        #expect(ids.count == 500)
        #expect(ids == ids.sorted())
        let payloads = try connection.query(
            "SELECT payload ->> 'n' FROM sluice.jobs WHERE id = ANY($1::bigint[]) ORDER BY id", [ids], context: "read"
        ).map { try $0.decode(Int.self, at: 0) }
        #expect(payloads == Array(0..<500))
        try connection.query("SELECT pg_notify('sluice_jobs', 'marker')", context: "marker")
        #expect(eventually { recorder.notifications.contains { $0.payload == "marker" } })
        #expect(recorder.notifications.map(\.payload).sorted() == ["even", "marker", "odd"])
    }

    @Test("a transaction that enqueues and rolls back leaves no job and wakes no one")
    func rollbackLeavesNothing() throws {
        struct Abort: Error {}
        let database = try TestDatabase()
        let recorder = try NotificationRecorder(url: database.url)
        let connection = try database.connect()
        let queue = JobQueue()
        #expect(throws: Abort.self) {
            try connection.transaction(context: "enqueue then abort") { tx in
                try queue.enqueue(NewJob(kind: "k", uniqueKey: "rolled-back"), on: tx)
                throw Abort()
            }
        }
        // A committed marker after the rollback proves the listener was listening the whole time.
        try connection.query("SELECT pg_notify('sluice_jobs', 'marker')", context: "marker")
        #expect(eventually { !recorder.notifications.isEmpty })
        #expect(recorder.notifications.map(\.payload) == ["marker"])
        #expect(
            try connection.query("SELECT count(*) FROM sluice.jobs", context: "count").single().decode(Int.self, at: 0)
                == 0)
        #expect(
            try connection.query("SELECT count(*) FROM sluice.unique_keys", context: "count").single().decode(
                Int.self, at: 0) == 0)
    }

    @Test("NOTIFY wakes a waiting claimer long before its 30 s poll")
    func notifyWakesClaimer() throws {
        let database = try TestDatabase()
        let signal = WakeSignal()
        let listener = PostgresListener(
            connectionString: database.url, channels: [JobQueue.notificationChannel], logger: .init(label: "test")
        ) { event in
            if case .notification(let note) = event, note.payload == "default" { signal.signal() }
        }
        try listener.startAndWait()
        defer { listener.stop() }

        let claimed = Box<[Int64]>([])
        let claimer = Thread {
            guard let connection = try? database.connect() else { return }
            let queue = JobQueue()
            let start = Date()
            // A claimer that polls every 30 s: only a notification can wake it within the test's time.
            while Date().timeIntervalSince(start) < 60 {
                if let jobs = try? queue.claim(from: "default", limit: 10, on: connection), !jobs.isEmpty {
                    claimed.value.withLock { $0.append(contentsOf: jobs.map(\.id)) }
                    return
                }
                signal.wait(timeout: 30)
            }
        }
        claimer.start()
        Thread.sleep(forTimeInterval: 0.3)  // let it find the queue empty and start waiting
        let enqueuedAt = Date()
        let id = try JobQueue().enqueue(NewJob(kind: "k"), on: database.connect())
        #expect(eventually(timeout: 10) { !claimed.value.withLock { $0.isEmpty } })
        #expect(claimed.value.withLock { $0 } == [id])
        #expect(Date().timeIntervalSince(enqueuedAt) < 15)
    }
}
