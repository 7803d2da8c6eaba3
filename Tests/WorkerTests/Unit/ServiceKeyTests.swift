import Crypto
import Foundation
import Testing

@testable import Worker

/// Service keys in this process: their form, their hash and their scopes.
@Suite("service keys, in-process")
struct ServiceKeyTests {
    @Test("a key is sk_sluice_ and 32 random bytes in base64url; two keys differ; the prefix shows 8 of them")
    func form() {
        let key = ServiceKey.generate()
        #expect(key.secret.hasPrefix("sk_sluice_"))
        let random = key.secret.dropFirst("sk_sluice_".count)
        #expect(random.count == 43)
        #expect(random.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_") })
        #expect(ServiceKey.generate().secret != key.secret)
        #expect(key.prefix == String(key.secret.prefix(18)))
    }

    @Test("what is kept is the SHA-256 of the whole key")
    func hash() {
        let key = ServiceKey.generate()
        #expect(key.hash == Array(SHA256.hash(data: Array(key.secret.utf8))))
        #expect(key.hash.count == 32)
    }

    @Test("scopes are the three named ones; an unknown or empty list is refused naming the problem")
    func scopes() throws {
        #expect(try ServiceKey.parseScopes("usage:write, access:read").get() == ["access:read", "usage:write"])
        #expect(try ServiceKey.parseScopes("billing:write,billing:write").get() == ["billing:write"])
        #expect(throws: ServiceKey.ScopeError.self) { try ServiceKey.parseScopes("admin").get() }
        #expect(throws: ServiceKey.ScopeError.self) { try ServiceKey.parseScopes(" , ").get() }
    }
}
