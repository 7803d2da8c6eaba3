/// The wait before retrying a failed attempt: exponential, capped, with jitter.
///
/// delay = min(cap, base × 2^(attempt−1)), then a uniform pick from [delay/2, delay], so workers that
/// failed together do not retry together.
public struct Backoff: Sendable, Hashable {
    /// The delay after the first failed attempt, before jitter, in seconds.
    public var base: Double
    /// The longest delay, before jitter, in seconds.
    public var cap: Double

    /// The defaults of DESIGN.md: 2 s doubling up to 1 h.
    public static let standard = Backoff(base: 2, cap: 3600)

    public init(base: Double, cap: Double) {
        self.base = base
        self.cap = cap
    }

    /// The upper bound of the delay after `attempt` (1-based) failed.
    public func ceiling(afterAttempt attempt: Int) -> Double {
        // Past 2^62 the power overflows; the cap is long reached by then.
        let exponent = Double(min(max(attempt, 1) - 1, 62))
        return min(cap, base * pow2(exponent))
    }

    /// A jittered delay after `attempt` (1-based) failed, in seconds.
    public func delay<Generator: RandomNumberGenerator>(
        afterAttempt attempt: Int,
        using generator: inout Generator
    ) -> Double {
        let ceiling = ceiling(afterAttempt: attempt)
        guard ceiling > 0 else { return 0 }
        return Double.random(in: (ceiling / 2)...ceiling, using: &generator)
    }

    /// A jittered delay using the system's random numbers.
    public func delay(afterAttempt attempt: Int) -> Double {
        var generator = SystemRandomNumberGenerator()
        return delay(afterAttempt: attempt, using: &generator)
    }

    private func pow2(_ exponent: Double) -> Double {
        Double(sign: .plus, exponent: Int(exponent), significand: 1)
    }
}
