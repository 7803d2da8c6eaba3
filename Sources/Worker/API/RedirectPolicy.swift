import Foundation

/// Where the app's API lets Stripe send a user back to (`success_url`, `cancel_url`, `return_url`): only
/// the hosts of `SLUICE_ALLOWED_REDIRECT_HOSTS`, so a crafted request cannot turn a Stripe page into a
/// redirect to a phishing site.
struct RedirectPolicy: Sendable {
    /// Lower-case host names; empty refuses every URL.
    let hosts: Set<String>

    /// Why `text` may not be a redirect URL, or nil when it may.
    func refusal(of text: String) -> String? {
        guard !hosts.isEmpty else {
            return "no redirect host is allowed; the operator sets SLUICE_ALLOWED_REDIRECT_HOSTS"
        }
        // Browsers and Foundation disagree on backslashes, controls and spaces; none belongs in such a URL.
        guard text.utf8.count <= 2048, !text.unicodeScalars.contains(where: { $0.value <= 0x20 || $0 == "\\" }),
            let url = URLComponents(string: text), let scheme = url.scheme?.lowercased(),
            let host = url.host?.lowercased(), !host.isEmpty
        else { return "must be an absolute URL of at most 2048 bytes" }
        guard url.user == nil, url.password == nil else { return "must not carry a user name or password" }
        guard hosts.contains(host) else { return "host \(host) is not in SLUICE_ALLOWED_REDIRECT_HOSTS" }
        guard scheme == "https" || (scheme == "http" && LoopbackHost.contains(host)) else {
            return "must use https (http only for localhost)"
        }
        return nil
    }
}
