import Foundation
import TestKit

/// A `sluice receive` process against a database of its own, with the test secrets configured.
final class ReceiverUnderTest: Sendable {
    let database: any DatabaseUnderTest
    let process: SluiceProcess
    let port: Int
    let adminPort: Int

    /// - Parameters:
    ///   - role: a role of deploy/roles.sql to run as (the script is applied first, on a cluster of the
    ///     test's own: roles are cluster-wide); nil runs as the server's superuser.
    ///   - ownCluster: a cluster of the test's own, to stop and start (``cluster``).
    init(environment: [String: String] = [:], role: String? = nil, ownCluster: Bool = false) throws {
        database = try role != nil || ownCluster ? Cluster() : TestDatabase()
        var url = database.url
        if let role {
            try database.connect().run(
                script: Repository.text("deploy/roles.sql"), context: "applying deploy/roles.sql")
            url = url.replacingOccurrences(of: "://postgres@", with: "://\(role)@")
        }
        var env = [
            "SLUICE_LISTEN": "127.0.0.1:0", "SLUICE_ADMIN_LISTEN": "127.0.0.1:0",
            "STRIPE_WEBHOOK_SECRET": WebhookSigning.stripeSecret, "CLERK_WEBHOOK_SECRET": WebhookSigning.clerkSecret,
        ]
        env.merge(environment) { _, new in new }
        process = try SluiceProcess(["receive"], databaseURL: url, environment: env)
        let process = process
        _ = eventually(timeout: 30) {
            process.listeningPort("Webhook receiver") != nil && process.listeningPort("Admin server") != nil
                || !process.isRunning
        }
        guard let port = process.listeningPort("Webhook receiver"),
            let adminPort = process.listeningPort("Admin server")
        else { throw ScriptFailure(description: "the receiver did not start:\n\(process.log)") }
        self.port = port
        self.adminPort = adminPort
    }

    func post(_ source: String, headers: [(String, String)], body: [UInt8]) throws -> HTTPReply {
        try RawHTTP.post(port: port, path: "/webhooks/\(source)", headers: headers, body: body)
    }

    /// The test's own cluster, when it asked for one.
    var cluster: Cluster {
        get throws {
            guard let cluster = database as? Cluster else {
                throw ScriptFailure(description: "ReceiverUnderTest(ownCluster: true) is needed to stop the server")
            }
            return cluster
        }
    }

    func jobCount() throws -> Int {
        try database.count("SELECT count(*) FROM sluice.jobs")
    }

    /// `GET path` on the admin server.
    func admin(_ path: String) throws -> HTTPReply {
        let request = "GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        return try RawHTTP.exchange(port: adminPort, request: Array(request.utf8))
    }

    /// The value of one sample line of /metrics, 0 when absent.
    func metric(_ sample: String) throws -> Int {
        for line in try admin("/metrics").body.split(separator: "\n") where line.hasPrefix(sample + " ") {
            return Int(Double(line.dropFirst(sample.count + 1)) ?? -1)
        }
        return 0
    }
}
