import Foundation
import NIOHTTP1
import PGQueue

/// The jobs other services enqueue to act on Stripe. Each names its target by `subscription_id`,
/// `customer_id` or `user_id` (a Clerk user, resolved through `billing`), calls Stripe with an
/// idempotency key derived from the job, writes a returned subscription into the model at once, and
/// stores its result for `sluice.job_result(job id)` (NOTIFY `sluice_job_results`).
public enum StripeActionJobs {
    /// Every kind that calls Stripe (the actions, and reconcile, report_usage and resync), sharing one
    /// client and so one rate limit.
    public static func all(client: StripeClient) -> [any JobHandler] {
        let support = StripeJobSupport(client: client)
        return [
            changePlan(support), cancelSubscription(support), resumeSubscription(support), portalSession(support),
            checkoutSession(support),
        ] + StripeSyncJobs.all(support: support)
    }

    /// `stripe.change_plan`: `{"subscription_id" | "user_id", "price", "proration_behavior"?, "at"?}`.
    ///
    /// `at: "now"` (the default) swaps the first item's price at once, prorated as `proration_behavior`
    /// says (Stripe's default: `create_prorations`). `at: "period_end"` schedules the same change as a job
    /// that runs when the current period ends (a downgrade that keeps what was paid for); its result names it.
    static func changePlan(_ support: StripeJobSupport) -> StripeAction<ChangePlanPayload> {
        StripeAction(kind: "stripe.change_plan") { job, payload, connection in
            let subscription = try support.subscriptionID(payload.subscriptionID, user: payload.userID, on: connection)
            if payload.at == .periodEnd {
                return try scheduleAtPeriodEnd(job, payload, subscription: subscription, support, on: connection)
            }
            return try support.calling {
                let current = try support.client.send(.GET, "/v1/subscriptions/\(StripeClient.pathID(subscription))")
                guard let items = (current.object["items"] as? [String: Any])?["data"] as? [[String: Any]],
                    let item = items.first?["id"] as? String
                else { throw JobError.permanent("subscription \(subscription) has no items to change") }
                var form = [("items[0][id]", item), ("items[0][price]", payload.price.value)]
                if let proration = payload.prorationBehavior { form.append(("proration_behavior", proration.value)) }
                return try support.updateSubscription(
                    job, subscription, .POST, form: form, step: "update", on: connection)
            }
        }
    }

    /// The change as a job of its own, run when the subscription's current period ends.
    private static func scheduleAtPeriodEnd(
        _ job: ClaimedJob, _ payload: ChangePlanPayload, subscription: String, _ support: StripeJobSupport,
        on connection: PostgresConnection
    ) throws -> JobOutcome {
        guard let end = try BillingStore(connection).currentPeriodEnd(ofSubscription: subscription) else {
            throw JobError.permanent("subscription \(subscription) has no known period end")
        }
        var later = payload
        later.at = .now
        later.subscriptionID = NonEmptyString(subscription)
        later.userID = nil
        let id = try JobQueue().enqueue(
            NewJob(
                kind: job.kind, payload: String(decoding: try JSONEncoder().encode(later), as: UTF8.self),
                queue: job.queue, runAt: end,
                uniqueKey: "stripe.change_plan:\(subscription):\(Int(end.timeIntervalSince1970)):\(payload.price)"),
            on: connection)
        try support.finish(
            job, subscription: nil, result: ["scheduled_job_id": id, "at": ISO8601DateFormatter().string(from: end)],
            on: connection)
        return .success
    }

    /// `stripe.cancel_subscription`: `{"subscription_id" | "user_id", "at"?}`; `at: "period_end"` (the
    /// default) keeps access until the period ends, `at: "now"` cancels at once.
    static func cancelSubscription(_ support: StripeJobSupport) -> StripeAction<CancelSubscriptionPayload> {
        StripeAction(kind: "stripe.cancel_subscription") { job, payload, connection in
            let subscription = try support.subscriptionID(payload.subscriptionID, user: payload.userID, on: connection)
            return try support.calling {
                payload.at == .now
                    ? try support.updateSubscription(job, subscription, .DELETE, step: "cancel", on: connection)
                    : try support.updateSubscription(
                        job, subscription, .POST, form: [("cancel_at_period_end", "true")], step: "cancel",
                        on: connection)
            }
        }
    }

    /// `stripe.resume_subscription`: `{"subscription_id" | "user_id"}`: undoes a cancellation at period end
    /// and resumes paused payment collection.
    static func resumeSubscription(_ support: StripeJobSupport) -> StripeAction<ResumeSubscriptionPayload> {
        StripeAction(kind: "stripe.resume_subscription") { job, payload, connection in
            let subscription = try support.subscriptionID(payload.subscriptionID, user: payload.userID, on: connection)
            return try support.calling {
                try support.updateSubscription(
                    job, subscription, .POST, form: [("cancel_at_period_end", "false"), ("pause_collection", "")],
                    step: "resume", on: connection)
            }
        }
    }

    /// `stripe.create_portal_session`: `{"customer_id" | "user_id", "return_url"}` → result `{"url", "id"}`.
    static func portalSession(_ support: StripeJobSupport) -> StripeAction<PortalSessionPayload> {
        StripeAction(kind: "stripe.create_portal_session") { job, payload, connection in
            guard
                let customer = try support.customerID(
                    payload.customerID, user: payload.userID, required: true, on: connection)
            else { return .success }
            return try support.calling {
                try support.createSession(
                    job, "/v1/billing_portal/sessions",
                    form: [("customer", customer), ("return_url", payload.returnURL.value)], step: "portal",
                    on: connection)
            }
        }
    }

    /// `stripe.create_checkout_session`: `{"user_id", "price", "success_url", "cancel_url", "customer_id"?}`
    /// → result `{"url", "id"}`. The session carries the user as `client_reference_id`, which links the
    /// customer to the user when `checkout.session.completed` arrives.
    static func checkoutSession(_ support: StripeJobSupport) -> StripeAction<CheckoutSessionPayload> {
        StripeAction(kind: "stripe.create_checkout_session") { job, payload, connection in
            var form = [
                ("mode", "subscription"), ("line_items[0][price]", payload.price.value),
                ("line_items[0][quantity]", "1"), ("success_url", payload.successURL.value),
                ("cancel_url", payload.cancelURL.value), ("client_reference_id", payload.userID.value),
            ]
            if let customer = try support.customerID(
                payload.customerID, user: payload.userID, required: false, on: connection)
            {
                form.append(("customer", customer))
            }
            return try support.calling {
                try support.createSession(job, "/v1/checkout/sessions", form: form, step: "checkout", on: connection)
            }
        }
    }
}

/// A job that reads a `Payload` and acts on Stripe with the connection of its slot.
struct StripeAction<Payload: Decodable & Sendable>: JobHandler {
    let kind: String
    let act: @Sendable (ClaimedJob, Payload, PostgresConnection) throws -> JobOutcome

    func handle(_ job: ClaimedJob, context: JobContext) throws -> JobOutcome {
        let payload = try JobPayload.decode(Payload.self, from: job)
        return try act(job, payload, context.connection())
    }
}
