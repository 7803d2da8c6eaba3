/// The handlers a `sluice` process runs.
public enum StandardJobs {
    /// Every built-in kind: `sluice.noop`; `stripe.event` and `clerk.event`, which keep the billing
    /// model; and `usage.record`. `testJobs` adds the crash and mark kinds used by fault tests; `stripeMode` (`live` or `test`)
    /// makes the Stripe handler record and skip events of the other mode.
    public static func registry(testJobs: Bool, stripeMode: String? = nil) -> JobRegistry {
        var registry = JobRegistry([
            NoopJob(allowsCrash: testJobs), BillingEventJob.stripe(mode: stripeMode), BillingEventJob.clerk,
            UsageRecordJob(),
        ])
        if testJobs { registry.register(TestMarkJob()) }
        return registry
    }
}
