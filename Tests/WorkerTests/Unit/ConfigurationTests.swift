import Foundation
import Testing

@testable import Worker

/// Configuration parsing, in this process: what each variable accepts, its default, and the error that
/// names it. The process-level test in ServiceTests checks the exit status and the one-line message.
@Suite("configuration")
struct ConfigurationTests {
    static func load(_ environment: [String: String]) throws -> SluiceConfiguration {
        try ConfigurationOptions.parse([]).configuration(environment: environment)
    }

    @Test("an empty environment gives the documented defaults")
    func defaults() throws {
        let configuration = try Self.load([:])
        #expect(configuration.listen == .address(host: "127.0.0.1", port: 8080))
        #expect(configuration.adminListen == .address(host: "127.0.0.1", port: 9090))
        #expect(configuration.pool.concurrency == 10)
        #expect(configuration.pool.leaseSeconds == 30)
        #expect(configuration.shutdownSeconds == 25)
        #expect(configuration.pool.uniqueRetentionSeconds == 7 * 86_400)
        #expect(configuration.pool.pollSeconds == 1)
        #expect(configuration.pool.errorHistoryLimit == 20)
        #expect(configuration.logLevel == .info)
        #expect(!configuration.testJobs)
        #expect(configuration.webhooks.isEmpty)
        #expect(configuration.pool.excludedQueues == ["webhooks"], "no secrets to verify its events with")
        #expect(
            configuration.pool.periodic.map(\.kind) == ["outbound.sweep"],
            "no periodic Stripe jobs without STRIPE_API_KEY")
        #expect(configuration.stripe.baseURL == "https://api.stripe.com")
    }

    @Test("values are read from the environment and validated")
    func values() throws {
        let configuration = try Self.load([
            "SLUICE_LISTEN": "off", "SLUICE_ADMIN_LISTEN": "0.0.0.0:0", "SLUICE_CONCURRENCY": "4",
            "SLUICE_QUEUES": "webhooks:2,default:2", "SLUICE_UNIQUE_RETENTION": "12h", "SLUICE_LOG_LEVEL": "debug",
            "STRIPE_API_BASE": "http://127.0.0.1:12111", "STRIPE_MODE": "live",
        ])
        #expect(configuration.listen == .off)
        #expect(configuration.adminListen == .address(host: "0.0.0.0", port: 0))
        #expect(configuration.pool.concurrency == 4)
        #expect("\(configuration.pool.queues)".contains("webhooks"))
        #expect(configuration.pool.uniqueRetentionSeconds == 12 * 3600)
        #expect(configuration.logLevel == .debug)
        #expect(configuration.stripe.baseURL == "http://127.0.0.1:12111")
        #expect(configuration.stripeMode == "live")
    }

    @Test(
        "a bad value is refused naming its variable",
        arguments: [
            ("SLUICE_CONCURRENCY", "lots"), ("SLUICE_CONCURRENCY", "0"), ("SLUICE_ADMIN_LISTEN", "nowhere"),
            ("SLUICE_QUEUES", "a:0"), ("SLUICE_UNIQUE_RETENTION", "7 days"), ("SLUICE_LOG_LEVEL", "loud"),
            ("STRIPE_API_BASE", "http://stripe.example"), ("STRIPE_MODE", "sandbox"), ("SLUICE_LEASE_SECONDS", "0.1"),
            ("SLUICE_DEAD_LETTER_RETENTION", "30d"), ("STRIPE_WEBHOOK_SECRET", "not-a-secret"),
            ("CLERK_WEBHOOK_SECRET", "whsec_%%%"), ("CLERK_JWT_KEY", "not-a-pem"),
            ("CLERK_JWKS_URL", "http://clerk.example/.well-known/jwks.json"), ("SLUICE_CORS_ORIGINS", "*"),
            ("SLUICE_ALLOWED_REDIRECT_HOSTS", "https://app.example.com"),
            ("SLUICE_ALLOWED_REDIRECT_HOSTS", "*.example.com"),
            ("SLUICE_ALLOWED_REDIRECT_HOSTS", "app.example.com:443"), ("SLUICE_API_WAIT_SECONDS", "-1"),
            ("SLUICE_CORS_ORIGINS", "https://app.example.com/path"), ("SLUICE_CORS_ORIGINS", "app.example.com"),
        ])
    func badValue(variable: String, value: String) {
        #expect {
            try Self.load([variable: value])
        } throws: { error in
            (error as? ConfigurationError)?.variable == variable
        }
    }

    @Test("secrets come from the variable or the file its _FILE twin names, never both, and stay out of logs")
    func secretsFromFiles() throws {
        let path = NSTemporaryDirectory() + "sluice-secret-\(UInt32.random(in: 0...UInt32.max))"
        defer { try? FileManager.default.removeItem(atPath: path) }
        try "whsec_from_a_file\n".write(toFile: path, atomically: true, encoding: .utf8)
        let configuration = try Self.load(["STRIPE_WEBHOOK_SECRET_FILE": path])
        #expect(configuration.webhooks.sources == [.stripe])
        #expect(!"\(configuration.webhooks)".contains("from_a_file"))
        #expect(throws: ConfigurationError.self) {
            try Self.load(["STRIPE_WEBHOOK_SECRET_FILE": path, "STRIPE_WEBHOOK_SECRET": "whsec_other"])
        }
    }
}

/// The journald line format, in this process.
@Suite("journal lines")
struct JournalLineTests {
    @Test("syslog priorities follow the levels journald knows")
    func priorities() {
        #expect(JournalLogHandler.syslogPriority(.critical) == 2)
        #expect(JournalLogHandler.syslogPriority(.error) == 3)
        #expect(JournalLogHandler.syslogPriority(.warning) == 4)
        #expect(JournalLogHandler.syslogPriority(.notice) == 5)
        #expect(JournalLogHandler.syslogPriority(.info) == 6)
        #expect(JournalLogHandler.syslogPriority(.debug) == 7)
    }

    @Test("a value with spaces, quotes, equals signs or newlines is quoted so the line splits back into fields")
    func quoting() {
        #expect(JournalLogHandler.quoted("plain") == "plain")
        #expect(JournalLogHandler.quoted("") == #""""#)
        #expect(JournalLogHandler.quoted("two words") == #""two words""#)
        #expect(JournalLogHandler.quoted(#"say "hi""#) == #""say \"hi\"""#)
        #expect(JournalLogHandler.quoted("a=b") == #""a=b""#)
        #expect(JournalLogHandler.quoted("line\nbreak") == #""line\nbreak""#)
        #expect(JournalLogHandler.quoted("cr\rhere") == #""cr\rhere""#)
        #expect(JournalLogHandler.quoted("évt_ü") == "évt_ü")
        #expect(JournalLogHandler.quoted("évt ü") == #""évt ü""#)
        #expect(JournalLogHandler.quoted("a\u{2028}b") == #""a\u{2028}b""#)
        // "\r\n" is one Character; written raw it would end the line and forge the next one.
        #expect(JournalLogHandler.quoted("x\r\n<2>forged") == #""x\r\n<2>forged""#)
        #expect(JournalLogHandler.quoted("=\u{301}") == "\"=\u{301}\"")
    }
}

/// The app API's Clerk settings.
@Suite("configuration of Clerk sessions")
struct ClerkConfigurationTests {
    @Test("a key needs its issuer; the PEM may come on one line with \\n; parties are a list")
    func clerk() throws {
        let tokens = try ClerkTokens()
        let oneLine = tokens.publicPEM.replacingOccurrences(of: "\n", with: "\\n")
        #expect {
            try ConfigurationTests.load(["CLERK_JWT_KEY": oneLine])
        } throws: { error in
            (error as? ConfigurationError)?.variable == "CLERK_ISSUER"
        }
        let configuration = try ConfigurationTests.load([
            "CLERK_JWT_KEY": oneLine, "CLERK_ISSUER": "https://clerk.sluice.test",
            "CLERK_AUTHORIZED_PARTIES": "https://a.test, https://b.test",
        ])
        #expect(configuration.clerkSession?.issuer == "https://clerk.sluice.test")
        #expect(configuration.clerkSession?.authorizedParties == ["https://a.test", "https://b.test"])
        #expect(configuration.clerkSession?.keys == .pem(tokens.publicPEM))
        let published = try ConfigurationTests.load([
            "CLERK_JWKS_URL": "https://clerk.sluice.test/.well-known/jwks.json",
            "CLERK_ISSUER": "https://clerk.sluice.test",
        ])
        #expect(published.clerkSession?.keys == .jwks(url: "https://clerk.sluice.test/.well-known/jwks.json"))
        for url in ["http://clerk.sluice.test/jwks.json", "ftp://x", "not a url"] {
            #expect {
                try ConfigurationTests.load(["CLERK_JWKS_URL": url, "CLERK_ISSUER": "https://clerk.sluice.test"])
            } throws: { error in
                (error as? ConfigurationError)?.variable == "CLERK_JWKS_URL"
            }
        }
        #expect(
            try ConfigurationTests.load([
                "CLERK_JWKS_URL": "http://127.0.0.1:9/jwks.json", "CLERK_ISSUER": "https://clerk.sluice.test",
            ]).clerkSession != nil, "loopback may use http")
        #expect(try ConfigurationTests.load([:]).clerkSession == nil)
    }
}
