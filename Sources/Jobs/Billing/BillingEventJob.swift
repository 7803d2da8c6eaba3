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
    /// Applies the job's event through the store and returns the outcome it recorded.
    private let apply: @Sendable (BillingStore, ClaimedJob) throws(PostgresError) -> String
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
            kind: WebhookSource.stripe.jobKind,
            apply: { store, job throws(PostgresError) in try store.applyStripeEvent(payload: job.payload, mode: mode) },
            verification: (verifiers, .stripe))
    }

    /// `stripe.fetched_event`: an event Sluice listed from Stripe's API itself (reconciliation), applied
    /// without a signature. Only the schema owner may enqueue this kind (`sluice.kind_rules`).
    public static func fetched(mode: String?) -> BillingEventJob {
        BillingEventJob(
            kind: "stripe.fetched_event",
            apply: { store, job throws(PostgresError) in try store.applyStripeEvent(payload: job.payload, mode: mode) },
            verification: nil)
    }

    /// The `clerk.event` handler; the payload's `event_id` (the svix-id) identifies the event.
    public static func clerk(verifiers: WebhookVerifiers) -> BillingEventJob {
        BillingEventJob(
            kind: WebhookSource.clerk.jobKind,
            apply: { store, job throws(PostgresError) in try store.applyClerkEvent(payload: job.payload) },
            verification: (verifiers, .clerk))
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
            let outcome = try apply(BillingStore(context.connection()), job)
            if outcome.hasPrefix(Self.futurePrefix) {
                return try snooze(
                    job, secondsAhead: Double(outcome.dropFirst(Self.futurePrefix.count)) ?? 3600, context)
            }
            context.logger.debug("Billing event processed", metadata: ["event.outcome": "\(outcome)"])
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
        let decoder = JSONDecoder()
        guard let stored = try? decoder.decode(ClerkEvent.self, from: Data(payload.utf8)) else { return nil }
        // The receiver keeps the raw body under "body"; a payload without one is the event itself.
        let event = stored.body.flatMap { try? decoder.decode(ClerkEvent.self, from: Data($0.utf8)) } ?? stored
        guard event.type == "user.deleted", let id = event.data?.id, let stamp = event.timestamp else { return nil }
        return ErasureList.Entry(userID: id, version: stamp)
    }

    /// The fields of a Clerk event (or of a stored delivery) that an erasure needs.
    private struct ClerkEvent: Decodable {
        var type: String?
        var timestamp: Int64?
        var data: Subject?
        var body: String?

        struct Subject: Decodable {
            var id: String?
        }
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
