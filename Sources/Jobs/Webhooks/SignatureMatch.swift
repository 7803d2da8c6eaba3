import Crypto
import Foundation

/// The HMAC check both signature schemes share.
enum SignatureMatch {
    /// Whether any of `candidates` is the HMAC-SHA256 of `signed` followed by `body` under any of `keys`.
    ///
    /// Each key's MAC is computed once, however many candidates there are (a body may be 1 MiB), and every
    /// comparison runs in constant time.
    static func any<Candidate: DataProtocol>(
        keys: [SymmetricKey], signed: [UInt8], body: [UInt8], candidates: [Candidate]
    ) -> Bool {
        keys.contains { key in
            var mac = HMAC<SHA256>(key: key)
            mac.update(data: signed)
            mac.update(data: body)
            let expected = mac.finalize()
            return candidates.contains { expected == $0 }
        }
    }
}
