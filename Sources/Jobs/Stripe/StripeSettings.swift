/// How Sluice talks to Stripe's API: `STRIPE_API_KEY`, `STRIPE_API_BASE`, `STRIPE_RATE_LIMIT`.
public struct StripeSettings: Sendable {
    /// The secret key (`sk_live_…`, `sk_test_…`, or a restricted `rk_…`); nil makes every Stripe job fail
    /// permanently with a message that says to set it.
    public var apiKey: String?
    public var baseURL: String
    /// Requests per second this process sends at most (Stripe allows 100 in live mode, 25 in test mode).
    public var requestsPerSecond: Double
    public var timeoutSeconds: Double
    /// Pinned, so a change of the account's default version cannot change the shapes the jobs read.
    public var version: String

    public init(
        apiKey: String?, baseURL: String = "https://api.stripe.com", requestsPerSecond: Double = 25,
        timeoutSeconds: Double = 30, version: String = "2025-03-31.basil"
    ) {
        self.apiKey = apiKey
        self.baseURL = baseURL
        self.requestsPerSecond = requestsPerSecond
        self.timeoutSeconds = timeoutSeconds
        self.version = version
    }
}
