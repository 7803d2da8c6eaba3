import Crypto
import Synchronization

/// A token bucket per caller (`SLUICE_API_RATE_LIMIT` a second, twice that in a burst): a caller over it
/// is told how long to wait. Callers are told apart by a hash of their bearer token (never the token);
/// requests without one share a bucket.
final class CallerRateLimiter: Sendable {
    private struct Bucket {
        var tokens: Double
        var updated: ContinuousClock.Instant
    }

    private let perSecond: Double
    private let burst: Double
    private let buckets = Mutex<[SHA256.Digest: Bucket]>([:])
    /// Past this many callers, buckets idle long enough to be full again are dropped.
    private static let tidyAbove = 10_000

    init(perSecond: Double) {
        self.perSecond = perSecond
        burst = perSecond * 2
    }

    /// Takes one request from the caller's bucket: nil when it may go on, else the seconds to wait.
    func take(token: String?, now: ContinuousClock.Instant = .now) -> Int? {
        let key = SHA256.hash(data: Array((token ?? "").utf8))
        return buckets.withLock { buckets in
            if buckets.count > Self.tidyAbove {
                let full = Duration.seconds(burst / perSecond)
                buckets = buckets.filter { now - $0.value.updated < full }
            }
            var bucket = buckets[key] ?? Bucket(tokens: burst, updated: now)
            let elapsed = now - bucket.updated
            let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
            bucket.tokens = min(burst, bucket.tokens + seconds * perSecond)
            bucket.updated = now
            defer { buckets[key] = bucket }
            guard bucket.tokens >= 1 else {
                return max(1, Int(((1 - bucket.tokens) / perSecond).rounded(.up)))
            }
            bucket.tokens -= 1
            return nil
        }
    }
}
