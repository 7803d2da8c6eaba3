import ArgumentParser
import Foundation
import Jobs
import PGQueue

/// `sluice resync`: refetch from Stripe and apply, through a `stripe.resync` job.
struct ResyncCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "resync",
        abstract: "Refetch customers, subscriptions (status=all) and open invoices from Stripe and apply them.",
        discussion: """
            Enqueues a stripe.resync job and waits for its result, so a running worker with STRIPE_API_KEY does
            the work. Objects are applied with the usual version rules, at the time Stripe answered.
            """
    )

    @Option(help: "Only this Stripe customer (cus_...); all customers when left out.")
    var customer: String?

    @Option(help: "Seconds to wait for a worker to finish the job.")
    var wait: Double = 300

    @OptionGroup var database: DatabaseOptions

    func run() throws {
        let connection = try database.connect()
        let payload = String(decoding: try JSONEncoder().encode(ResyncPayload(customerID: customer)), as: UTF8.self)
        let id = try reportingDatabaseErrors { () throws(PostgresError) in
            try JobQueue().enqueue(NewJob(kind: "stripe.resync", payload: payload), on: connection)
        }
        print("stripe.resync job \(id) enqueued; waiting for a worker")
        let deadline = Date(timeIntervalSinceNow: wait)
        while Date() < deadline {
            let result = try reportingDatabaseErrors { () throws(PostgresError) -> String? in
                let rows = try connection.query(
                    """
                    SELECT coalesce(sluice.job_result($1)::text,
                                    (SELECT 'failed: ' || (errors -> -1 ->> 'error') FROM sluice.dead_letters WHERE id = $1))
                    """, [id], context: "reading the job result")
                return try rows.single().decode(String?.self, at: 0)
            }
            if let result {
                print(result)
                if result.hasPrefix("failed: ") { throw ExitCode(1) }
                return
            }
            Thread.sleep(forTimeInterval: 0.5)
        }
        throw CommandFailure(
            "no result within \(Int(wait)) s: is a worker running with STRIPE_API_KEY set? (job \(id))")
    }
}
