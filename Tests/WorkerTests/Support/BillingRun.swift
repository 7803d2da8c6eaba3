import Foundation
import PGQueue
import TestKit

/// Runs deliveries through the real pool: a database of their own, the jobs enqueued in the given
/// order, and `sluice work` until the queue is empty.
struct BillingRun: DatabaseUnderTest {
    let database: TestDatabase

    init() throws {
        database = try TestDatabase()
    }

    var url: String { database.url }

    /// Enqueues `deliveries` in order and runs `sluice work` with `concurrency` slots until no job waits.
    @discardableResult
    func process(_ deliveries: [BillingEvents.Delivery], concurrency: Int = 1, environment: [String: String] = [:])
        throws -> SluiceProcess
    {
        let connection = try connect()
        for delivery in deliveries { try JobQueue().enqueue(delivery.job, on: connection) }
        let worker = try SluiceProcess(
            ["work"], databaseURL: url,
            environment: [
                "SLUICE_CONCURRENCY": "\(concurrency)", "SLUICE_QUEUES": "webhooks", "SLUICE_PERIODIC": "off",
                "STRIPE_WEBHOOK_SECRET": WebhookSigning.stripeSecret,
                "CLERK_WEBHOOK_SECRET": WebhookSigning.clerkSecret,
            ].merging(environment) {
                _, new in new
            })
        let drained = eventually(timeout: 60) {
            (try? connection.query("SELECT count(*) FROM sluice.jobs", context: "count").single().decode(
                Int.self, at: 0)) == 0
        }
        worker.signal(SIGTERM)
        _ = worker.waitForExit(timeout: 20)
        guard drained else { throw ScriptFailure(description: "jobs left in the queue:\n\(worker.log)") }
        return worker
    }
}
