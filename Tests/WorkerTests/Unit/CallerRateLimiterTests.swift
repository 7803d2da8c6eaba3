import Testing

@testable import Worker

/// The API's rate limits, with the clock passed in.
@Suite("API rate limit")
struct CallerRateLimiterTests {
    @Test("a verified caller gets twice the rate in a burst, then waits; another caller is not held up; time refills")
    func perCaller() {
        let start = ContinuousClock.now
        let limiter = CallerRateLimiter(perSecond: 5, now: start)
        for _ in 0..<10 { #expect(limiter.take(caller: "service:1", token: PresentedToken("a"), now: start) == nil) }
        #expect(
            limiter.take(caller: "service:1", token: PresentedToken("a"), now: start) == 1,
            "over the burst of 10: wait a second")
        #expect(
            limiter.take(caller: "service:2", token: PresentedToken("b"), now: start) == nil,
            "another caller has its own bucket")
        #expect(
            limiter.take(caller: "service:1", token: PresentedToken("a"), now: start + .milliseconds(200)) == nil,
            "one refilled")
        #expect(limiter.take(caller: "service:1", token: PresentedToken("a"), now: start + .milliseconds(200)) != nil)
    }

    @Test("made-up tokens share one bucket before they are checked, so rotating them does not get past it")
    func unverifiedShareOneBucket() {
        let start = ContinuousClock.now
        let limiter = CallerRateLimiter(perSecond: 1, now: start)
        for index in 0..<20 {
            #expect(limiter.admit(token: PresentedToken("sk_sluice_fake\(index)"), now: start) == nil)
        }
        #expect(
            limiter.admit(token: PresentedToken("sk_sluice_fake_next"), now: start) != nil,
            "the shared burst of 20 is spent")
        #expect(limiter.admit(token: nil, now: start) != nil, "requests without a token share it too")
        _ = limiter.take(caller: "service:1", token: PresentedToken("sk_sluice_real"), now: start)
        #expect(
            limiter.admit(token: PresentedToken("sk_sluice_real"), now: start) == nil, "a token that verified skips it")
    }

    @Test("an empty token that verified somewhere does not let requests without a token skip the shared bucket")
    func noTokenNeverVerified() {
        let start = ContinuousClock.now
        let limiter = CallerRateLimiter(perSecond: 1, now: start)
        _ = limiter.take(caller: "user:ada", token: PresentedToken(""), now: start)
        #expect(limiter.admit(token: PresentedToken(""), now: start) == nil, "the empty token itself verified")
        for _ in 0..<20 { _ = limiter.admit(token: nil, now: start) }
        #expect(limiter.admit(token: nil, now: start) != nil, "without a token: the shared bucket, spent")
    }

    @Test("a rate below one a second still lets one request through")
    func tinyRate() {
        let start = ContinuousClock.now
        let limiter = CallerRateLimiter(perSecond: 0.1, now: start)
        #expect(limiter.take(caller: "user:ada", token: PresentedToken("t"), now: start) == nil)
        #expect(limiter.take(caller: "user:ada", token: PresentedToken("t"), now: start) == 10)
    }
}
