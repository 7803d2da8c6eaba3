/// The host names that stay on this machine: the only ones a URL may name over plain http (a fake in tests,
/// a developer's app), wherever Sluice checks one (Stripe's base, Clerk's keys, redirects, endpoints).
enum LoopbackHost {
    static let names: Set<String> = ["localhost", "127.0.0.1", "::1", "[::1]"]

    static func contains(_ host: String?) -> Bool {
        host.map { names.contains($0.lowercased()) } ?? false
    }
}
