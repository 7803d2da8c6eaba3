import Foundation
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
            ChangePlanJob(support: support), CancelSubscriptionJob(support: support),
            ResumeSubscriptionJob(support: support), PortalSessionJob(support: support),
            CheckoutSessionJob(support: support),
        ] + StripeSyncJobs.all(support: support)
    }
}

/// `stripe.change_plan`: `{"subscription_id" | "user_id", "price", "proration_behavior"?, "at"?}`.
///
/// `at: "now"` (the default) swaps the first item's price at once, prorated as `proration_behavior` says
/// (Stripe's default: `create_prorations`). `at: "period_end"` schedules the same change as a job that
/// runs when the current period ends (a downgrade that keeps what was paid for); its result names it.
struct ChangePlanJob: JobHandler {
    let kind = "stripe.change_plan"
    let support: StripeJobSupport

    func handle(_ job: ClaimedJob, context: JobContext) throws -> JobOutcome {
        var payload = try JobPayload.decode(ChangePlanPayload.self, from: job)
        let price = payload.price.value
        let connection = try context.connection()
        let subscription = try support.subscriptionID(payload.subscriptionID, user: payload.userID, on: connection)
        if payload.at == .periodEnd {
            guard let end = try BillingStore(connection).currentPeriodEnd(ofSubscription: subscription) else {
                throw JobError.permanent("subscription \(subscription) has no known period end")
            }
            payload.at = .now
            payload.subscriptionID = NonEmptyString(subscription)
            payload.userID = nil
            let later = try JobQueue().enqueue(
                NewJob(
                    kind: kind, payload: String(decoding: try JSONEncoder().encode(payload), as: UTF8.self),
                    queue: job.queue, runAt: end,
                    uniqueKey: "stripe.change_plan:\(subscription):\(Int(end.timeIntervalSince1970)):\(price)"),
                on: connection)
            try support.finish(
                job, subscription: nil,
                result: ["scheduled_job_id": later, "at": ISO8601DateFormatter().string(from: end)], on: connection)
            return .success
        }
        return try support.calling {
            let current = try support.client.send(.GET, "/v1/subscriptions/\(StripeClient.pathID(subscription))")
            guard let items = (current.object["items"] as? [String: Any])?["data"] as? [[String: Any]],
                let item = items.first?["id"] as? String
            else { throw JobError.permanent("subscription \(subscription) has no items to change") }
            var form = [("items[0][id]", item), ("items[0][price]", price)]
            if let proration = payload.prorationBehavior { form.append(("proration_behavior", proration.value)) }
            let updated = try support.client.send(
                .POST, "/v1/subscriptions/\(StripeClient.pathID(subscription))", form: form,
                idempotencyKey: support.idempotencyKey(job, "update"))
            try support.finish(job, subscription: updated, result: StripeJobSupport.summary(updated), on: connection)
            return .success
        }
    }
}

/// `stripe.cancel_subscription`: `{"subscription_id" | "user_id", "at"?}`; `at: "period_end"` (the
/// default) keeps access until the period ends, `at: "now"` cancels at once.
struct CancelSubscriptionJob: JobHandler {
    let kind = "stripe.cancel_subscription"
    let support: StripeJobSupport

    func handle(_ job: ClaimedJob, context: JobContext) throws -> JobOutcome {
        let payload = try JobPayload.decode(CancelSubscriptionPayload.self, from: job)
        let connection = try context.connection()
        let subscription = try support.subscriptionID(payload.subscriptionID, user: payload.userID, on: connection)
        return try support.calling {
            let key = support.idempotencyKey(job, "cancel")
            let updated =
                payload.at == .now
                ? try support.client.send(
                    .DELETE, "/v1/subscriptions/\(StripeClient.pathID(subscription))", idempotencyKey: key)
                : try support.client.send(
                    .POST, "/v1/subscriptions/\(StripeClient.pathID(subscription))",
                    form: [("cancel_at_period_end", "true")],
                    idempotencyKey: key)
            try support.finish(job, subscription: updated, result: StripeJobSupport.summary(updated), on: connection)
            return .success
        }
    }
}

/// `stripe.resume_subscription`: `{"subscription_id" | "user_id"}`: undoes a cancellation at period end
/// and resumes paused payment collection.
struct ResumeSubscriptionJob: JobHandler {
    let kind = "stripe.resume_subscription"
    let support: StripeJobSupport

    func handle(_ job: ClaimedJob, context: JobContext) throws -> JobOutcome {
        let payload = try JobPayload.decode(ResumeSubscriptionPayload.self, from: job)
        let connection = try context.connection()
        let subscription = try support.subscriptionID(payload.subscriptionID, user: payload.userID, on: connection)
        return try support.calling {
            let updated = try support.client.send(
                .POST, "/v1/subscriptions/\(StripeClient.pathID(subscription))",
                form: [("cancel_at_period_end", "false"), ("pause_collection", "")],
                idempotencyKey: support.idempotencyKey(job, "resume"))
            try support.finish(job, subscription: updated, result: StripeJobSupport.summary(updated), on: connection)
            return .success
        }
    }
}

/// `stripe.create_portal_session`: `{"customer_id" | "user_id", "return_url"}` → result `{"url", "id"}`.
struct PortalSessionJob: JobHandler {
    let kind = "stripe.create_portal_session"
    let support: StripeJobSupport

    func handle(_ job: ClaimedJob, context: JobContext) throws -> JobOutcome {
        let payload = try JobPayload.decode(PortalSessionPayload.self, from: job)
        let connection = try context.connection()
        guard
            let customer = try support.customerID(
                payload.customerID, user: payload.userID, required: true, on: connection)
        else { return .success }
        return try support.calling {
            let session = try support.client.send(
                .POST, "/v1/billing_portal/sessions",
                form: [("customer", customer), ("return_url", payload.returnURL.value)],
                idempotencyKey: support.idempotencyKey(job, "portal"))
            try support.finish(
                job, subscription: nil,
                result: ["url": session.object["url"] ?? NSNull(), "id": session.object["id"] ?? NSNull()],
                on: connection)
            return .success
        }
    }
}

/// `stripe.create_checkout_session`: `{"user_id", "price", "success_url", "cancel_url", "customer_id"?}`
/// → result `{"url", "id"}`. The session carries the user as `client_reference_id`, which links the
/// customer to the user when `checkout.session.completed` arrives.
struct CheckoutSessionJob: JobHandler {
    let kind = "stripe.create_checkout_session"
    let support: StripeJobSupport

    func handle(_ job: ClaimedJob, context: JobContext) throws -> JobOutcome {
        let payload = try JobPayload.decode(CheckoutSessionPayload.self, from: job)
        var form = [
            ("mode", "subscription"), ("line_items[0][price]", payload.price.value), ("line_items[0][quantity]", "1"),
            ("success_url", payload.successURL.value), ("cancel_url", payload.cancelURL.value),
            ("client_reference_id", payload.userID.value),
        ]
        let connection = try context.connection()
        if let customer = try support.customerID(
            payload.customerID, user: payload.userID, required: false, on: connection)
        {
            form.append(("customer", customer))
        }
        return try support.calling {
            let session = try support.client.send(
                .POST, "/v1/checkout/sessions", form: form, idempotencyKey: support.idempotencyKey(job, "checkout"))
            try support.finish(
                job, subscription: nil,
                result: ["url": session.object["url"] ?? NSNull(), "id": session.object["id"] ?? NSNull()],
                on: connection)
            return .success
        }
    }
}
