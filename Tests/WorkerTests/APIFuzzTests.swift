import Foundation
import TestKit
import Testing

/// Schemathesis (from PyPI; `make test` installs it) fuzzes the running `sluice api` from its OpenAPI
/// document, as a signed-in user and as a service, with a worker and the fake Stripe beside it: no answer
/// may be a 5xx or break the document (status, headers, content type, schema).
@Suite("app API: schemathesis", .serialized)
struct APIFuzzTests {
    /// Examples per operation: enough to reach every branch of validation, few enough for CI.
    static let examples = 20

    @Test("schemathesis finds no 5xx and no answer outside the document, as a user and as a service")
    func fuzz() async throws {
        guard let schemathesis = Self.schemathesis() else {
            Issue.record("schemathesis is not installed: run scripts/install-python-tools.sh (make test does)")
            return
        }
        let under = try APIActionTests.ActionsUnderTest(
            waitSeconds: 1, environment: ["SLUICE_API_RATE_LIMIT": "10000"])
        let base = "http://127.0.0.1:\(under.api.port)"
        let session = try await under.clerk.token(user: "user_1", expiresIn: 3600)
        let key = try under.api.key(["access:read", "usage:write", "billing:write"])
        for (caller, token) in [("user", session), ("service", key)] {
            let (output, status) = try ChildProcess.run(
                schemathesis,
                [
                    "run", "\(base)/v1/openapi.yaml", "--url", base, "--header", "Authorization: Bearer \(token)",
                    "--max-examples", "\(Self.examples)", "--seed", "1", "--checks", "all",
                    "--exclude-checks", "ignored_auth,positive_data_acceptance", "--generation-database", "none",
                    "--workers", "2", "--no-color", "--request-timeout", "20",
                ])
            #expect(status == 0, "as a \(caller):\n\(output.suffix(12_000))\n\(under.api.process.log.suffix(4_000))")
        }
    }

    /// The `st` command, where pip put it.
    static func schemathesis() -> String? {
        let home = ProcessInfo.processInfo.environment["HOME"] ?? "/root"
        let path = ProcessInfo.processInfo.environment["PATH"] ?? ""
        let candidates = path.split(separator: ":").map { "\($0)/st" } + ["\(home)/.local/bin/st", "/usr/local/bin/st"]
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0) }
    }
}
