import Crypto
import Synchronization

/// The app API's rate limits, token buckets of `SLUICE_API_RATE_LIMIT` a second and twice that in a
/// burst: one per verified caller (`service:<key id>`, `user:<sub>`), and one shared, ten times larger,
/// for requests whose credentials have not verified yet. Checking credentials costs a database lookup or
/// an RSA verification, so a flood of made-up tokens empties the shared bucket instead of reaching either;
/// a token seen to verify recently skips it.
final class CallerRateLimiter: Sendable {
    private struct Bucket {
        var tokens: Double
        var updated: ContinuousClock.Instant
    }

    private struct State {
        var buckets: [String: Bucket] = [:]
        /// Hashes of tokens that verified, so their next requests skip the shared bucket.
        var verified: Set<SHA256.Digest> = []
        var lastTidy: ContinuousClock.Instant
    }

    static let unverified = "unverified"
    /// More callers or verified tokens than this are trimmed, at most once a second.
    private static let capacity = 10_000

    private let perSecond: Double
    private let burst: Double
    private let state: Mutex<State>

    init(perSecond: Double, now: ContinuousClock.Instant = .now) {
        self.perSecond = perSecond
        burst = max(1, perSecond * 2)
        state = Mutex(State(lastTidy: now))
    }

    /// Before a request's credentials are checked: nil when it may go on (its token verified recently, or
    /// the shared bucket has room), else the seconds to wait.
    func admit(token: PresentedToken?, now: ContinuousClock.Instant = .now) -> Int? {
        state.withLock { state in
            if let token, state.verified.contains(token.digest) { return nil }
            return Self.take(Self.unverified, rate: perSecond * 10, burst: burst * 10, now: now, from: &state)
        }
    }

    /// Once a caller is known: notes its token as verified and takes one request from its own bucket; nil
    /// when it may go on, else the seconds to wait.
    func take(caller: String, token: PresentedToken, now: ContinuousClock.Instant = .now) -> Int? {
        state.withLock { state in
            if now - state.lastTidy > .seconds(1),
                state.buckets.count > Self.capacity || state.verified.count > Self.capacity
            {
                let full = Duration.seconds(burst / perSecond)
                state.buckets = state.buckets.filter { now - $0.value.updated < full }
                if state.verified.count > Self.capacity { state.verified.removeAll(keepingCapacity: true) }
                state.lastTidy = now
            }
            state.verified.insert(token.digest)
            return Self.take(caller, rate: perSecond, burst: burst, now: now, from: &state)
        }
    }

    private static func take(
        _ key: String, rate: Double, burst: Double, now: ContinuousClock.Instant, from state: inout State
    ) -> Int? {
        var bucket = state.buckets[key] ?? Bucket(tokens: burst, updated: now)
        let elapsed = now - bucket.updated
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        bucket.tokens = min(burst, bucket.tokens + seconds * rate)
        bucket.updated = now
        defer { state.buckets[key] = bucket }
        guard bucket.tokens >= 1 else { return max(1, Int(((1 - bucket.tokens) / rate).rounded(.up))) }
        bucket.tokens -= 1
        return nil
    }
}
