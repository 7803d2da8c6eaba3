import Testing

@testable import Worker

/// The API's per-caller token buckets, with the clock passed in.
@Suite("API rate limit")
struct CallerRateLimiterTests {
    @Test("a caller gets twice the rate in a burst, then waits; another caller is not held up; time refills")
    func buckets() {
        let limiter = CallerRateLimiter(perSecond: 5)
        let start = ContinuousClock.now
        for _ in 0..<10 { #expect(limiter.take(token: "a", now: start) == nil) }
        #expect(limiter.take(token: "a", now: start) == 1, "over the burst of 10: wait a second")
        #expect(limiter.take(token: "b", now: start) == nil, "another caller has a bucket of its own")
        #expect(limiter.take(token: "a", now: start + .milliseconds(200)) == nil, "one refilled in 200 ms")
        #expect(limiter.take(token: "a", now: start + .milliseconds(200)) != nil)
        #expect(limiter.take(token: nil, now: start) == nil, "requests without a token share one bucket")
    }
}
