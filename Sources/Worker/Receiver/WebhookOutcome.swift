/// What became of a webhook request; the `outcome` label of `sluice_webhooks_total`.
enum WebhookOutcome: String, Sendable, CaseIterable {
    case accepted
    case duplicate
    case badSignature = "bad_signature"
    case stale
    case malformed
    case tooLarge = "too_large"
    case unavailable
    case notConfigured = "not_configured"
}
