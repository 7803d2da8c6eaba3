import Foundation
public import PGQueue

/// `stripe.event` and `clerk.event`: applies a webhook event to the `billing` model.
///
/// The work is one call to `billing.apply_stripe_event` or `billing.apply_clerk_event` (schema.sql), made
/// inside the job's transaction: the event's writes, its row in `billing.processed_events` and the job's
/// completion commit together, so an event is applied exactly once however often it is delivered or retried.
/// The payload is what the receiver stores (the raw body under `body`, the svix-id under `event_id`); a
/// payload without `body` is taken as the event itself, so an operator can enqueue an event by hand.
///
/// An event with a missing or wrong-typed field fails permanently at once, with an error naming the field
/// (PostgreSQL's data exceptions, SQLSTATE class 22): retrying cannot fix the event, and it rests in the
/// dead letters while every other event goes on.
public struct BillingEventJob: JobHandler {
    public let kind: String
    public let usesTransaction = true
    private let statement: PreparedStatement
    private let bindingsFor: @Sendable (ClaimedJob) -> [(any PostgresBindable)?]
    /// The verifiers a stored delivery must pass, and its source; nil for events Sluice fetched from
    /// Stripe itself.
    private let verification: (verifiers: WebhookVerifiers, source: WebhookSource)?

    /// The `stripe.event` handler: a delivery the receiver stored, verified again before it is applied.
    /// - Parameters:
    ///   - mode: `live` or `test` to record events of the other mode without applying them (`STRIPE_MODE`);
    ///     nil applies both.
    ///   - verifiers: the webhook verifiers the stored signature must pass.
    public static func stripe(mode: String?, verifiers: WebhookVerifiers) -> BillingEventJob {
        BillingEventJob(
            kind: WebhookSource.stripe.jobKind, statement: applyStripe, bindingsFor: { job in [job.payload, mode] },
            verification: (verifiers, .stripe))
    }

    /// `stripe.fetched_event`: an event Sluice listed from Stripe's API itself (reconciliation), applied
    /// without a signature. Only the schema owner may enqueue this kind (`sluice.kind_rules`).
    public static func fetched(mode: String?) -> BillingEventJob {
        BillingEventJob(
            kind: "stripe.fetched_event", statement: applyStripe, bindingsFor: { job in [job.payload, mode] },
            verification: nil)
    }

    /// The `clerk.event` handler; the payload's `event_id` (the svix-id) identifies the event.
    public static func clerk(verifiers: WebhookVerifiers) -> BillingEventJob {
        BillingEventJob(
            kind: WebhookSource.clerk.jobKind,
            statement: PreparedStatement(
                name: "billing_apply_clerk_event",
                sql:
                    "SELECT billing.apply_clerk_event(\(eventOf("$1")), billing.text_at($1::jsonb, '{event_id}', true))"
            ),
            bindingsFor: { job in [job.payload] }, verification: (verifiers, .clerk))
    }

    private static let applyStripe = PreparedStatement(
        name: "billing_apply_stripe_event", sql: "SELECT billing.apply_stripe_event(\(eventOf("$1")), $2::text)")

    /// The event in a job payload: the raw body the receiver kept, or the payload itself.
    private static func eventOf(_ parameter: String) -> String {
        """
        CASE WHEN jsonb_typeof(\(parameter)::jsonb -> 'body') = 'string'
             THEN (\(parameter)::jsonb ->> 'body')::jsonb ELSE \(parameter)::jsonb END
        """
    }

    public func handle(_ job: ClaimedJob, context: JobContext) throws -> JobOutcome {
        if let verification {
            do {
                try verification.verifiers.verifyStored(source: verification.source, payload: job.payload)
            } catch {
                throw JobError.permanent("the event is not applied: \(error)")
            }
        }
        do {
            let outcome = try context.connection().execute(
                statement, bindingsFor(job), context: "applying a \(kind) job to the billing model"
            ).single().decode(String.self, at: 0)
            if outcome.hasPrefix(Self.futurePrefix) {
                return try snooze(
                    job, secondsAhead: Double(outcome.dropFirst(Self.futurePrefix.count)) ?? 3600, context)
            }
            context.logger.debug("Billing event processed", metadata: ["outcome": "\(outcome)"])
            if kind == "clerk.event", outcome == "applied", let erasure = Self.erasure(in: job.payload) {
                // The journal keeps erasures where a database restore cannot undo them: an operator applies
                // them again with 'sluice erasures apply' (see ErasureList).
                context.logger.info(
                    "User erased",
                    metadata: ["user.id": "\(erasure.userID)", "erasure.version": "\(erasure.version)"])
            }
            return .success
        } catch let error as PostgresError where error.isDataException {
            throw JobError.permanent("the event cannot be applied: \(error.message)")
        }
    }

    /// The erasure a `user.deleted` event in a `clerk.event` payload makes, if it is one.
    private static func erasure(in payload: String) -> ErasureList.Entry? {
        guard var event = try? JSONSerialization.jsonObject(with: Data(payload.utf8)) as? [String: Any] else {
            return nil
        }
        if let body = event["body"] as? String,
            let inner = try? JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any]
        {
            event = inner
        }
        guard event["type"] as? String == "user.deleted", let data = event["data"] as? [String: Any],
            let id = data["id"] as? String, let stamp = (event["timestamp"] as? NSNumber)?.int64Value
        else { return nil }
        return ErasureList.Entry(userID: id, version: stamp)
    }

    /// The outcome `billing.apply_*_event` gives an event dated more than 5 minutes ahead of the database clock.
    static let futurePrefix = "future:"
    /// How long an event may stay in the future before it is given up on.
    static let futureLimitSeconds: Double = 3600

    /// An event from the future is not applied (its version would win every later comparison): it waits
    /// until the clock catches up, so a lagging clock delays events instead of losing them, and an event an
    /// hour in the future (a forged or broken date) dies with a reason that says so.
    private func snooze(_ job: ClaimedJob, secondsAhead: Double, _ context: JobContext) throws -> JobOutcome {
        let waited = Date().timeIntervalSince(job.createdAt)
        guard waited < Self.futureLimitSeconds else {
            throw JobError.permanent(
                "the event is dated \(Int(secondsAhead)) s ahead of the database clock and has been for over an "
                    + "hour (since \(Int(waited)) s); check the clocks, then retry it with sluice dead retry")
        }
        let delay = min(max(secondsAhead - 300 + 1, 1), Self.futureLimitSeconds - waited + 1)
        context.logger.warning(
            "Event dated ahead of the database clock; snoozing",
            metadata: ["ahead_s": "\(Int(secondsAhead))", "snooze_s": "\(Int(delay))"])
        return .snooze(seconds: delay)
    }
}
