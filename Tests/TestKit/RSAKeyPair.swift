import Foundation

/// A 2048-bit RSA key pair made with `openssl`, as PEM: what the tests and the API benchmark sign Clerk-like
/// session tokens with, apart from the server's own code.
public struct RSAKeyPair: Sendable {
    public let privatePEM: String
    public let publicPEM: String

    public init() throws {
        let folder = NSTemporaryDirectory() + "sluice-rsa-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let made = try ChildProcess.run(
            "openssl",
            ["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", folder + "/key.pem"])
        let exported = try ChildProcess.run(
            "openssl", ["pkey", "-in", folder + "/key.pem", "-pubout", "-out", folder + "/pub.pem"])
        guard made.status == 0, exported.status == 0 else {
            throw ScriptFailure(description: "openssl failed: \(made.output)\(exported.output)")
        }
        privatePEM = try String(contentsOfFile: folder + "/key.pem", encoding: .utf8)
        publicPEM = try String(contentsOfFile: folder + "/pub.pem", encoding: .utf8)
    }
}
