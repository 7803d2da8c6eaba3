import Synchronization

/// What the API's middleware knows of the request being answered, for its handlers (the generated inputs
/// carry no security scheme) and back for the access log.
enum APIRequest {
    /// The bearer token, if the request has one.
    @TaskLocal static var token: PresentedToken?
    /// Where a handler notes who called, once it knows; the access log reads it.
    @TaskLocal static var caller: CallerNote?

    /// Who called: `service:<key id>` or `user:<sub>`; never a token.
    final class CallerNote: Sendable {
        private let value = Mutex<String>("anonymous")

        var description: String { value.withLock { $0 } }

        func note(_ caller: String) { value.withLock { $0 = caller } }
    }
}
