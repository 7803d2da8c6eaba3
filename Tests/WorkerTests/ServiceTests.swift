import Foundation
import Jobs
import PGQueue
import TestKit
import Testing

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// The process side of running under systemd, and the admin server, against the real binary.
@Suite("service", .serialized)
struct ServiceTests {
    @Test(
        "READY=1 on NOTIFY_SOCKET once serving, /healthz, /readyz and /metrics on the admin port, STOPPING=1 and exit 0 on SIGTERM"
    )
    func readinessAndAdmin() async throws {
        let database = try TestDatabase()
        // A subscription the model knows without an amount (no event said it yet): MRR has a NULL to add up.
        try database.connect().run(
            script:
                "INSERT INTO billing.subscriptions (id, status, plan, version, rank) VALUES ('sub_x', 'active', 'pro', 1, 1)",
            context: "a subscription without an amount")
        let socket = try NotifySocket()
        let worker = try SluiceProcess(
            databaseURL: database.url,
            environment: ["SLUICE_ADMIN_LISTEN": "127.0.0.1:0", "NOTIFY_SOCKET": socket.path])
        #expect(socket.waitFor("READY=1", timeout: 20), "\(worker.log)")
        let port = try #require(worker.listeningPort("Admin server"), "\(worker.log)")
        _ = try JobQueue().enqueue(NewJob(kind: "sluice.noop"), on: database.connect())
        #expect(eventually(timeout: 10) { (try? database.count("SELECT count(*) FROM sluice.jobs")) == 0 })

        let health = try await Self.get("http://127.0.0.1:\(port)/healthz")
        #expect(health.status == 200)
        let ready = try await Self.get("http://127.0.0.1:\(port)/readyz")
        #expect(ready.status == 200)
        #expect(ready.body.contains("schema version \(SluiceSchema.version)"))
        let metrics = try await Self.get("http://127.0.0.1:\(port)/metrics")
        #expect(metrics.status == 200)
        #expect(metrics.body.contains(#"sluice_jobs_completed_total{queue="default",kind="sluice.noop"} 1"#))
        #expect(metrics.body.contains("sluice_job_duration_seconds_bucket"))
        // Counters the alerts take increase() of exist at zero; the business gauges come from this process,
        // the only one holding their lock.
        #expect(metrics.body.contains(#"sluice_outbound_endpoints_disabled_total{reason="gone"} 0"#))
        #expect(metrics.body.contains(#"sluice_stripe_requests_total{outcome="server_error"} 0"#))
        #expect(metrics.body.contains("sluice_business_past_due 0"), "\(metrics.body)")
        #expect(metrics.body.contains(#"sluice_business_subscriptions{status="active"} 1"#), "\(metrics.body)")
        #expect(!worker.log.contains("Pool maintenance failed"), "\(worker.log)")
        if FileManager.default.isExecutableFile(atPath: "/usr/bin/promtool") {
            let file = NSTemporaryDirectory() + "sluice-metrics-\(UInt32.random(in: 0...UInt32.max)).txt"
            try metrics.body.write(toFile: file, atomically: true, encoding: .utf8)
            defer { try? FileManager.default.removeItem(atPath: file) }
            let lint = try ChildProcess.run("/bin/sh", ["-c", "promtool check metrics < \(file)"])
            // It parses; its only complaint may be the HELP lines, which swift-metrics has no way to set.
            let problems = lint.output.split(separator: "\n").filter { !$0.hasSuffix("no help text") }
            #expect(lint.status == 0 || problems.isEmpty, "promtool check metrics: \(lint.output)")
        }

        // An old schema makes the process unready, and says what to do.
        try database.connect().query("UPDATE sluice.schema_version SET version = 0", context: "pretend old")
        let stale = try await Self.get("http://127.0.0.1:\(port)/readyz")
        #expect(stale.status == 503)
        #expect(stale.body.contains("sluice migrate"))

        worker.signal(SIGTERM)
        #expect(worker.waitForExit(timeout: 10) == 0)
        #expect(socket.received.contains { $0.contains("STOPPING=1") })
    }

    @Test("a bad configuration value stops start-up with one line naming the variable, exit status 78")
    func badConfiguration() throws {
        for (variable, value) in [
            ("SLUICE_CONCURRENCY", "lots"), ("SLUICE_ADMIN_LISTEN", "nowhere"), ("SLUICE_QUEUES", "a:0"),
            ("SLUICE_UNIQUE_RETENTION", "7 days"), ("SLUICE_LOG_LEVEL", "loud"),
            ("STRIPE_API_BASE", "http://stripe.example"),
        ] {
            let worker = try SluiceProcess(databaseURL: "postgresql://127.0.0.1:1/none", environment: [variable: value])
            #expect(worker.waitForExit(timeout: 10) == 78)
            let lines = worker.log.split(separator: "\n")
            #expect(lines.count == 1, "\(worker.log)")
            #expect(worker.log.contains(variable) && worker.log.contains(value), "\(worker.log)")
        }
    }

    @Test("WATCHDOG=1 pings at half the watchdog interval while the pool runs")
    func watchdogPings() throws {
        let database = try TestDatabase()
        let socket = try NotifySocket()
        let worker = try SluiceProcess(
            databaseURL: database.url, environment: ["NOTIFY_SOCKET": socket.path, "WATCHDOG_USEC": "1000000"])
        #expect(eventually(timeout: 20) { socket.received.filter { $0 == "WATCHDOG=1" }.count >= 3 }, "\(worker.log)")
        worker.signal(SIGTERM)
        #expect(worker.waitForExit(timeout: 10) == 0)
    }

    @Test("a second SIGTERM stops at once without waiting for running jobs; their leases are left to expire")
    func secondSignal() throws {
        let database = try TestDatabase()
        let worker = try SluiceProcess(
            databaseURL: database.url, environment: ["SLUICE_SHUTDOWN_SECONDS": "25", "SLUICE_LEASE_SECONDS": "30"])
        _ = try JobQueue().enqueue(
            NewJob(kind: "sluice.noop", payload: #"{"sleep_ms": 20000}"#), on: database.connect())
        #expect(
            eventually(timeout: 10) {
                (try? database.count("SELECT count(*) FROM sluice.jobs WHERE state = 'running'")) == 1
            })
        worker.signal(SIGTERM)
        #expect(eventually(timeout: 5) { worker.log.contains("Stopping gracefully") })
        let signalled = Date()
        worker.signal(SIGTERM)
        #expect(worker.waitForExit(timeout: 10) == 1)
        #expect(Date().timeIntervalSince(signalled) < 5)
        #expect(try database.count("SELECT count(*) FROM sluice.jobs WHERE state = 'running'") == 1)
    }

    static func get(_ url: String) async throws -> (status: Int, body: String) {
        let (data, response) = try await URLSession.shared.data(from: URL(string: url)!)
        return ((response as? HTTPURLResponse)?.statusCode ?? 0, String(decoding: data, as: UTF8.self))
    }
}

/// A Unix datagram socket standing in for systemd's NOTIFY_SOCKET.
final class NotifySocket: @unchecked Sendable {
    // Safety: `messages` is guarded by `lock`; the descriptor is read by one reader thread.
    let path = NSTemporaryDirectory() + "sluice-notify-\(UInt32.random(in: 0...UInt32.max)).sock"
    private let descriptor: Int32
    private let lock = NSLock()
    private var messages: [String] = []

    init() throws {
        let descriptor = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        self.descriptor = descriptor
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { buffer in
            buffer.copyBytes(from: Array(self.path.utf8))
        }
        let bound = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(descriptor, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard bound == 0 else { throw ScriptFailure(description: "could not bind \(path)") }
        Thread { [weak self] in
            var buffer = [UInt8](repeating: 0, count: 4096)
            while true {
                let count = recv(descriptor, &buffer, buffer.count, 0)
                guard count > 0, let self else { return }
                let message = String(decoding: buffer[0..<count], as: UTF8.self)
                self.lock.lock()
                self.messages.append(message)
                self.lock.unlock()
            }
        }.start()
    }

    deinit {
        shutdown(descriptor, Int32(SHUT_RDWR))
        close(descriptor)
        unlink(path)
    }

    var received: [String] {
        lock.lock()
        defer { lock.unlock() }
        return messages
    }

    func waitFor(_ text: String, timeout: Double) -> Bool {
        eventually(timeout: timeout) { received.contains { $0.contains(text) } }
    }
}
