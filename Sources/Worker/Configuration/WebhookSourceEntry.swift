import Jobs

/// A webhook source this build can receive: the variable that holds its signing secrets and the verifier
/// they make. A source whose variable is unset is off (its route answers 404).
struct WebhookSourceEntry {
    var source: WebhookSource
    var secretVariable: String
    var makeVerifier: ([String]) throws(WebhookSecretProblem) -> any WebhookVerifier

    /// Every source, one entry each: a new source adds its line here.
    static var all: [WebhookSourceEntry] {
        [
            WebhookSourceEntry(source: .stripe, secretVariable: "STRIPE_WEBHOOK_SECRET") {
                secrets throws(WebhookSecretProblem) in
                try StripeSignatureVerifier(secrets: secrets)
            },
            WebhookSourceEntry(source: .clerk, secretVariable: "CLERK_WEBHOOK_SECRET") {
                secrets throws(WebhookSecretProblem) in
                try SvixSignatureVerifier(secrets: secrets)
            },
        ]
    }
}
