/// The handlers a `sluice` process runs.
public enum StandardJobs {
    /// Every built-in kind: `sluice.noop`; `stripe.event` and `clerk.event`, which keep the billing
    /// model; `usage.record`; and the Stripe actions (`stripe.change_plan`, `stripe.cancel_subscription`,
    /// `stripe.resume_subscription`, `stripe.create_portal_session`, `stripe.create_checkout_session`);
    /// `outbound.deliver` and `outbound.sweep`, which tell the app.
    /// `testJobs` adds the crash and mark kinds used by fault tests; `stripeMode` (`live` or `test`) makes
    /// the Stripe event handler record and skip events of the other mode; `verifiers` are what stored
    /// events must verify with again (`stripe.fetched_event`, from reconciliation, needs none).
    public static func registry(
        testJobs: Bool, stripeMode: String? = nil, stripe: StripeSettings, verifiers: WebhookVerifiers
    ) -> JobRegistry {
        var registry = JobRegistry([
            NoopJob(allowsCrash: testJobs), BillingEventJob.stripe(mode: stripeMode, verifiers: verifiers),
            BillingEventJob.fetched(mode: stripeMode), BillingEventJob.clerk(verifiers: verifiers), UsageRecordJob(),
            OutboundDeliveryJob(), OutboundSweepJob(),
        ])
        for handler in StripeActionJobs.all(client: StripeClient(settings: stripe)) { registry.register(handler) }
        if testJobs { registry.register(TestMarkJob()) }
        return registry
    }
}
