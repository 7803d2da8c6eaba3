import Foundation
import TestKit

/// A `sluice receive` process against a cluster of its own, with the test secrets configured.
final class ReceiverUnderTest: Sendable {
    let cluster: Cluster
    let process: SluiceProcess
    let port: Int
    let adminPort: Int

    /// - Parameter role: a role of deploy/roles.sql to run as (the script is applied first); nil runs as
    ///   the cluster's superuser.
    init(environment: [String: String] = [:], role: String? = nil) throws {
        cluster = try Cluster()
        var url = cluster.url
        if let role {
            let script = try String(
                contentsOf: Repository.url("deploy/roles.sql"), encoding: .utf8)
            try cluster.connect().run(script: script, context: "applying deploy/roles.sql")
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

    func jobCount() throws -> Int {
        try cluster.count("SELECT count(*) FROM sluice.jobs")
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
