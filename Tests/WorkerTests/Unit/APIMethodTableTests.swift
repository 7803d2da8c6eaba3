import Testing

@testable import Worker

/// The method table behind the API's 405 answers, read from the document compiled into the binary.
@Suite("API method table")
struct APIMethodTableTests {
    @Test("every path of the document with its methods; parameters match exactly one segment")
    func table() {
        let routes = APIMethodMiddleware().routes
        #expect(routes.count == 11)
        #expect(routes.reduce(0) { $0 + $1.methods.count } == 11, "each path one method")
        func methods(_ path: String) -> [String]? { routes.first { $0.matches(path[...]) }?.methods }
        #expect(methods("/v1/me") == ["GET"])
        #expect(methods("/v1/usage") == ["POST"])
        #expect(methods("/v1/jobs/42") == ["GET"])
        #expect(methods("/v1/users/user_1/access") == ["GET"])
        #expect(methods("/v1/jobs/") == nil)
        #expect(methods("/v1/jobs/42/more") == nil)
        #expect(methods("/v1/users//access") == nil)
    }
}
