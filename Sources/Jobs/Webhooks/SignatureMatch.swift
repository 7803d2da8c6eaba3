import Crypto
import Foundation

/// The HMAC check both signature schemes share.
enum SignatureMatch {
    /// One HMAC-SHA256 per secret, keyed once: each check copies one instead of padding and hashing the
    /// key again for every delivery.
    static func keyed(_ keys: [SymmetricKey]) -> [HMAC<SHA256>] {
        keys.map { HMAC<SHA256>(key: $0) }
    }

    /// Whether any of `candidates` is the HMAC-SHA256 of `signed` followed by `body` under any of `keyed`.
    ///
    /// Each key's MAC is computed once, however many candidates there are (a body may be 1 MiB), and every
    /// comparison runs in constant time.
    static func any<Candidate: DataProtocol>(
        keyed: [HMAC<SHA256>], signed: [UInt8], body: [UInt8], candidates: [Candidate]
    ) -> Bool {
        keyed.contains { template in
            var mac = template
            signed.withUnsafeBytes { mac.update(data: $0) }
            body.withUnsafeBytes { mac.update(data: $0) }
            let expected = mac.finalize()
            return candidates.contains { expected == $0 }
        }
    }
}
