/// A failed Stripe request, sorted by what the job should do about it.
public struct StripeError: Error, CustomStringConvertible {
    public enum Action: Sendable, Equatable {
        /// 429: wait this long, then try again without spending an attempt.
        case waitAndRetry(seconds: Double)
        /// 5xx, a timeout or a network error: retry with the queue's backoff.
        case retry
        /// Any other 4xx, or no API key: retrying cannot help.
        case fail
    }

    public var action: Action
    public var description: String
}
