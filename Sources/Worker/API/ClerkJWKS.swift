import AsyncHTTPClient
import Foundation
import JWTKit
import Logging
import NIOCore

/// Clerk's public keys from its JWKS URL (`CLERK_JWKS_URL`), fetched at start and again when a token names
/// a key (`kid`) not yet seen: Clerk rotates keys by publishing the new one first.
///
/// A refresh for an unknown key happens at most once a minute, so tokens with made-up `kid`s cannot make
/// the server hammer Clerk (or be used to make it do so); concurrent requests share one fetch. Only RSA
/// keys for RS256 are taken from the set.
actor ClerkJWKS {
    static let refreshInterval: Duration = .seconds(60)
    private static let largestBody = 1 << 20

    private let url: String
    private let logger: Logger
    private var keys = JWTKeyCollection()
    private var kids: Set<String> = []
    private var lastRefresh: ContinuousClock.Instant?
    private var refreshing: Task<Void, Never>?
    private var started: ContinuousClock.Instant?

    init(url: String, logger: Logger) {
        self.url = url
        self.logger = logger
    }

    /// Fetches the keys once; a failure is logged and retried on the first token that needs them.
    func start() async {
        started = .now
        await fetch()
    }

    private func refreshed() {
        refreshing = nil
    }

    /// Known keys are fetched again this often anyway, in the background, so a key Clerk withdrew stops
    /// verifying without a restart.
    static let routineRefresh: Duration = .seconds(3600)

    /// The keys, when `kid` is among them (after a refresh, if one is due); nil when it is not.
    func keys(for kid: String) async -> JWTKeyCollection? {
        if kids.contains(kid) {
            if refreshing == nil, let last = lastRefresh ?? started, ContinuousClock.now - last >= Self.routineRefresh {
                lastRefresh = .now
                refreshing = Task {
                    await self.fetch()
                    self.refreshed()
                }
            }
            return keys
        }
        if let refreshing {
            await refreshing.value
        } else if lastRefresh.map({ ContinuousClock.now - $0 >= Self.refreshInterval }) ?? true {
            lastRefresh = .now
            let task = Task { await self.fetch() }
            refreshing = task
            await task.value
            refreshing = nil
        }
        return kids.contains(kid) ? keys : nil
    }

    private func fetch() async {
        do {
            var request = HTTPClientRequest(url: url)
            request.headers.add(name: "Accept", value: "application/json")
            let response = try await HTTPClient.shared.execute(request, timeout: .seconds(5))
            guard response.status == .ok else {
                throw FetchError(description: "answered \(response.status.code)")
            }
            let body = try await response.body.collect(upTo: Self.largestBody)
            let set = try JSONDecoder().decode(JWKS.self, from: Data(buffer: body))
            let collection = JWTKeyCollection()
            var found: Set<String> = []
            for key in set.keys
            where key.keyType == .rsa && (key.algorithm == nil || key.algorithm == .rs256) {
                guard let kid = key.keyIdentifier else { continue }
                try await collection.add(jwk: key)
                found.insert(kid.string)
            }
            guard !found.isEmpty else { throw FetchError(description: "holds no RSA key with a kid") }
            keys = collection
            kids = found
            logger.info("Fetched Clerk's keys", metadata: ["url": "\(url)", "kids": "\(found.sorted())"])
        } catch {
            logger.warning(
                "Could not fetch Clerk's keys; session tokens are refused until a fetch succeeds",
                metadata: ["url": "\(url)", "error": "\(error)"])
        }
    }

    struct FetchError: Error, CustomStringConvertible {
        var description: String
    }
}
