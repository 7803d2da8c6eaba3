import Crypto
import Logging
import PGQueue
import Synchronization

/// The service keys this API process checked in the last minute, so a busy service costs one database
/// round trip per request, not two.
///
/// A change to any key (`sluice keys revoke`, or an UPDATE in psql) fires `NOTIFY sluice_api_keys` from a
/// trigger and empties the cache at once; so does the listener reconnecting, as a notification may have been
/// missed. A check that was under way when the cache emptied is not stored, so a key revoked mid-request is
/// not remembered as live. Unknown keys are never stored: the shared rate limit bounds those.
final class ServiceKeyCache: Sendable {
    static let lifetime: Duration = .seconds(60)
    private static let capacity = 10_000

    private struct Entry {
        var caller: ServiceKeyStore.Caller
        var checked: ContinuousClock.Instant
    }

    private struct State {
        var entries: [SHA256.Digest: Entry] = [:]
        /// Raised on every flush: a check begun under an older generation is not stored.
        var generation = 0
    }

    /// The state, in a class of its own so the listener's handler can hold it.
    private final class Shared: Sendable {
        let state = Mutex(State())

        func flush() {
            state.withLock { state in
                state.entries.removeAll()
                state.generation += 1
            }
        }
    }

    private let shared = Shared()
    private let listener: PostgresListener

    init(connectionString: String?, logger: Logger) {
        let shared = self.shared
        listener = PostgresListener(connectionString: connectionString, channels: ["sluice_api_keys"], logger: logger) {
            _ in shared.flush()
        }
    }

    func start() { listener.start() }

    func stop() { listener.stop() }

    /// The caller of `token`, from the cache, else from `check` (whose live answer is kept for a minute).
    func caller(
        of token: PresentedToken, now: ContinuousClock.Instant = .now,
        check: () async throws -> ServiceKeyStore.Caller?
    ) async throws -> ServiceKeyStore.Caller? {
        let (cached, generation) = shared.state.withLock { state in
            (
                state.entries[token.digest].flatMap { now - $0.checked < Self.lifetime ? $0.caller : nil },
                state.generation
            )
        }
        if let cached { return cached }
        guard let found = try await check() else { return nil }
        shared.state.withLock { state in
            guard state.generation == generation else { return }
            if state.entries.count >= Self.capacity { state.entries.removeAll() }
            state.entries[token.digest] = Entry(caller: found, checked: now)
        }
        return found
    }
}
