import Crypto
import Foundation

/// A service's key to the app's API: `sk_sluice_` and 32 random bytes in base64url. Only its SHA-256 is
/// stored (the key is too random for a slow hash to add anything), and its prefix names it in lists.
struct ServiceKey: Sendable {
    static let marker = "sk_sluice_"
    /// What a key may do; `sluice.api_keys` refuses anything else.
    static let scopes = ["access:read", "usage:write", "billing:write"]

    /// The whole key, shown once.
    let secret: String

    /// A new key from the system's random number generator.
    static func generate() -> ServiceKey {
        var generator = SystemRandomNumberGenerator()
        let bytes = (0..<32).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
        let encoded = Data(bytes).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
        return ServiceKey(secret: marker + encoded)
    }

    /// The part of the key shown in lists and logs: the marker and eight characters.
    var prefix: String { String(secret.prefix(Self.marker.count + 8)) }

    /// What the database keeps.
    var hash: [UInt8] { Self.hash(secret) }

    /// The SHA-256 of a presented key, to look it up.
    static func hash(_ presented: String) -> [UInt8] {
        Array(SHA256.hash(data: Array(presented.utf8)))
    }

    /// Scopes from `access:read,usage:write`, or the first one that is not a scope.
    static func parseScopes(_ text: String) -> Result<[String], ScopeError> {
        let scopes = text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter {
            !$0.isEmpty
        }
        guard !scopes.isEmpty else { return .failure(ScopeError(scope: "")) }
        if let unknown = scopes.first(where: { !Self.scopes.contains($0) }) {
            return .failure(ScopeError(scope: unknown))
        }
        return .success(Array(Set(scopes)).sorted())
    }

    struct ScopeError: Error, CustomStringConvertible {
        var scope: String
        var description: String {
            scope.isEmpty
                ? "name at least one scope: \(ServiceKey.scopes.joined(separator: ", "))"
                : "\"\(scope)\" is not a scope; the scopes are \(ServiceKey.scopes.joined(separator: ", "))"
        }
    }
}
