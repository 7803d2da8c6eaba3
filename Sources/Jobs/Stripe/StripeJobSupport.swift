import Foundation
import NIOHTTP1
import PGQueue

/// What every job that calls Stripe shares: reading its payload, finding the subscription or customer
/// of a user, turning Stripe's answers into outcomes, and writing what Stripe answered.
struct StripeJobSupport: Sendable {
    let client: StripeClient

    /// `subscription`, else the subscription that gives `user` access (else the user's latest).
    func subscriptionID(_ subscription: NonEmptyString?, user: NonEmptyString?, on connection: PostgresConnection)
        throws -> String
    {
        if let subscription { return subscription.value }
        guard let user else { throw JobError.permanent("the payload needs subscription_id or user_id") }
        guard let id = try BillingStore(connection).subscription(ofUser: user.value) else {
            throw JobError.permanent("user \(user) has no subscription")
        }
        return id
    }

    /// `customer`, else the customer linked to `user`; nil when neither is known and `required` is false.
    func customerID(
        _ customer: NonEmptyString?, user: NonEmptyString?, required: Bool, on connection: PostgresConnection
    ) throws -> String? {
        if let customer { return customer.value }
        guard let user else {
            if required { throw JobError.permanent("the payload needs customer_id or user_id") }
            return nil
        }
        if let id = try BillingStore(connection).customer(ofUser: user.value) { return id }
        if required { throw JobError.permanent("user \(user) has no Stripe customer") }
        return nil
    }

    /// Runs `body`, turning a Stripe failure into what the queue should do: a 429 waits out `Retry-After`
    /// without spending an attempt, a 5xx or network error retries with backoff, any other 4xx dies.
    func calling(_ body: () throws -> JobOutcome) throws -> JobOutcome {
        do {
            return try body()
        } catch let error as StripeError {
            switch error.action {
            case .waitAndRetry(let seconds): return .snooze(seconds: seconds)
            case .retry: throw JobError.retryable(error.description)
            case .fail: throw JobError.permanent(error.description)
            }
        }
    }

    /// The idempotency key of one of a job's requests: the same for every retry of the job, and never the
    /// same for another job.
    ///
    /// Job ids alone repeat: a database restored from a backup hands out ids again that the lost timeline
    /// used within Stripe's 24 hours, and two deployments share one Stripe account. The time the job was
    /// enqueued, to the microsecond, is stored with the job (kept through retries and dead letters) and
    /// differs between those, so it makes the key unique without a column of its own.
    func idempotencyKey(_ job: ClaimedJob, _ step: String) -> String {
        let enqueued = Int64((job.createdAt.timeIntervalSince1970 * 1_000_000).rounded())
        return "sluice-\(job.id)-\(enqueued)-\(job.kind)-\(step)"
    }

    /// Sends one request that changes `subscription`, writes what Stripe returned into the model and stores
    /// its summary as the job's result. Call inside ``calling(_:)``.
    func updateSubscription(
        _ job: ClaimedJob, _ subscription: String, _ method: HTTPMethod, form: [(String, String)] = [],
        step: String, on connection: PostgresConnection
    ) throws -> JobOutcome {
        let updated = try client.send(
            method, "/v1/subscriptions/\(StripeClient.pathID(subscription))", form: form,
            idempotencyKey: idempotencyKey(job, step))
        try finish(job, subscription: updated, result: Self.summary(updated), on: connection)
        return .success
    }

    /// Creates a Stripe session (portal, checkout) and stores its `url` and `id` as the job's result.
    /// Call inside ``calling(_:)``.
    func createSession(
        _ job: ClaimedJob, _ path: String, form: [(String, String)], step: String, on connection: PostgresConnection
    ) throws -> JobOutcome {
        let session = try client.send(.POST, path, form: form, idempotencyKey: idempotencyKey(job, step))
        try finish(
            job, subscription: nil,
            result: ["url": session.object["url"] ?? NSNull(), "id": session.object["id"] ?? NSNull()],
            on: connection)
        return .success
    }

    /// Writes a subscription Stripe returned into the model, at the response's time, so the webhook that
    /// follows finds nothing newer to apply; and stores the job's result. One transaction.
    func finish(
        _ job: ClaimedJob, subscription: StripeResponse?, result: [String: Any], on connection: PostgresConnection
    ) throws {
        try connection.transaction(context: "recording the result of \(job.kind) job \(job.id)") { tx in
            if let subscription {
                let event: [String: Any] = [
                    "id": "api:\(job.id):\(job.kind)", "object": "event", "type": "customer.subscription.updated",
                    "created": subscription.time, "livemode": subscription.object["livemode"] as? Bool ?? false,
                    "data": ["object": (try? JSONSerialization.jsonObject(with: Data(subscription.body.utf8))) ?? [:]],
                ]
                try BillingStore(tx).applyStripeEvent(Self.json(event))
            }
            try tx.query(
                "SELECT sluice.record_job_result($1, $2, $3::jsonb)", [job.id, job.kind, Self.json(result)],
                context: "storing the job result")
        }
    }

    static func json(_ object: Any) -> String {
        String(
            decoding: (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data("{}".utf8),
            as: UTF8.self)
    }

    /// The fields of a subscription a caller wants back.
    static func summary(_ subscription: StripeResponse) -> [String: Any] {
        let object = subscription.object
        var summary: [String: Any] = [:]
        for key in ["id", "status", "cancel_at_period_end", "current_period_end", "customer"] {
            if let value = object[key] { summary[key] = value }
        }
        if let items = (object["items"] as? [String: Any])?["data"] as? [[String: Any]],
            let price = items.first?["price"] as? [String: Any]
        {
            summary["price"] = price["id"]
        }
        return ["subscription": summary]
    }
}
