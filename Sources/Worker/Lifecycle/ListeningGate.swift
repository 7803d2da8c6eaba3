/// Lets one task wait until every server of the process listens: each server passes once, at its bind.
///
/// The wait ends early, without a value, when the task is cancelled (a server that failed to bind
/// cancels the whole group), so nothing waits for a port that will never open.
struct ListeningGate: Sendable {
    private let stream: AsyncStream<Void>
    private let continuation: AsyncStream<Void>.Continuation
    private let servers: Int

    init(servers: Int) {
        (stream, continuation) = AsyncStream.makeStream(of: Void.self)
        self.servers = servers
    }

    /// A server is listening.
    func pass() {
        continuation.yield()
    }

    /// True once every server passed; false when cancelled first.
    func allListening() async -> Bool {
        var passed = 0
        guard servers > 0 else { return true }
        for await _ in stream {
            passed += 1
            if passed == servers { return true }
        }
        return false
    }
}
