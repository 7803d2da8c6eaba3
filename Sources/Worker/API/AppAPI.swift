import Foundation
import Jobs
import Logging
import OpenAPIRuntime
import PGQueue

/// The app's API (Sources/Worker/API/openapi.yaml), on the handlers the OpenAPI generator made from it.
///
/// Services authenticate with a key from `sluice keys create` and act within its scopes; a signed-in user
/// with a Clerk session token (``ClerkSessionVerifier``) reaches the `/v1/me…` routes as the token's `sub`.
struct AppAPI: APIProtocol {
    let database: APIDatabase
    /// The per-caller limit, taken once the caller is known.
    let limiter: CallerRateLimiter
    /// A lower limit per user on the Stripe action routes (`SLUICE_API_ACTION_RATE_LIMIT`).
    let actionLimiter: CallerRateLimiter
    /// Nil when no `CLERK_JWT_KEY` is configured: every session token is refused.
    let sessions: ClerkSessionVerifier?
    /// The service keys checked in the last minute.
    let keys: ServiceKeyCache
    /// Wakes a request waiting for the Stripe action job it started.
    let jobs: JobWaiter
    /// How long a Stripe action route waits for its job before it answers 202.
    let waitSeconds: Double
    /// The hosts `success_url`, `cancel_url` and `return_url` may name.
    let redirects: RedirectPolicy
    let logger: Logger

    /// Why a request may not go on.
    enum Denial: Error {
        case unauthorized(Components.Responses.Unauthorized)
        case forbidden(Components.Responses.Forbidden)
        case unavailable(Components.Responses.Unavailable)
        case rateLimited(Components.Responses.TooManyRequests)
    }

    // MARK: Callers

    /// The service key this request carries, if it is live and has `scope` (nil: any scope).
    func service(scope: String?) async -> Result<ServiceKeyStore.Caller, Denial> {
        guard let token = APIRequest.token else {
            return .failure(.unauthorized(Problems.unauthorized("a service key is required", tokenPresented: false)))
        }
        guard token.isServiceKey else {
            return .failure(
                .unauthorized(
                    Problems.unauthorized("this route takes a service key (sk_sluice_…)", tokenPresented: true)))
        }
        let caller: ServiceKeyStore.Caller?
        do {
            caller = try await keys.caller(of: token) {
                try await database.run { try ServiceKeyStore(connection: $0).authenticate(token) }
            }
        } catch {
            return .failure(.unavailable(unavailable(error)))
        }
        guard let caller else {
            return .failure(.unauthorized(Problems.unauthorized("unknown or revoked key", tokenPresented: true)))
        }
        APIRequest.caller?.note("service:\(caller.id)")
        if let wait = limiter.take(caller: "service:\(caller.id)", token: token) {
            return .failure(.rateLimited(Problems.tooManyRequests(retryAfter: wait)))
        }
        if let scope, !caller.scopes.contains(scope) {
            return .failure(.forbidden(Problems.forbidden("the key \(caller.name) lacks the scope \(scope)")))
        }
        return .success(caller)
    }

    /// The signed-in user of this request: the `sub` of a verified Clerk session token.
    func user() async -> Result<String, Denial> {
        guard let token = APIRequest.token else {
            return .failure(
                .unauthorized(Problems.unauthorized("a Clerk session token is required", tokenPresented: false)))
        }
        guard !token.isServiceKey else {
            return .failure(
                .unauthorized(
                    Problems.unauthorized("this route is for a signed-in user, not a service key", tokenPresented: true)
                ))
        }
        guard let sessions else {
            return .failure(
                .unauthorized(
                    Problems.unauthorized("this server verifies no Clerk session (CLERK_JWT_KEY)", tokenPresented: true)
                ))
        }
        switch await sessions.user(of: token.text) {
        case .success(let user):
            APIRequest.caller?.note("user:\(user)")
            if let wait = limiter.take(caller: "user:\(user)", token: token) {
                return .failure(.rateLimited(Problems.tooManyRequests(retryAfter: wait)))
            }
            return .success(user)
        case .failure(let refusal):
            return .failure(.unauthorized(Problems.unauthorized("\(refusal)", tokenPresented: true)))
        }
    }

    /// The database failed: the caller learns only to retry; the log gets the cause.
    func unavailable(_ error: any Error) -> Components.Responses.Unavailable {
        logger.error("API request failed on the database", metadata: ["error": "\(error)"])
        return Problems.unavailable("the database cannot answer now; retry")
    }

    /// Reads a body the database built as JSON (`billing.api_*`), its times in ISO 8601.
    static func decode<Body: Decodable>(_ type: Body.Type, _ json: String) throws -> Body {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .custom { decoder in
            let text = try decoder.singleValueContainer().decode(String.self)
            if let date = try? Date(
                text,
                strategy: .iso8601.year().month().day().time(includingFractionalSeconds: true).timeZone(
                    separator: .omitted))
            {
                return date
            }
            return try Date(text, strategy: .iso8601)
        }
        do {
            return try decoder.decode(type, from: Data(json.utf8))
        } catch {
            // Not the client's fault: a DecodingError here must not become a 400.
            throw DatabaseBodyError(description: "the database's JSON does not fit \(Body.self): \(error)")
        }
    }

    /// A body the database built that does not fit the document: a bug on this side (500).
    struct DatabaseBodyError: Error, CustomStringConvertible {
        var description: String
    }

    /// 1 to 255 bytes without NUL, which libpq cannot send (a value would be cut short at it).
    static func isPlainText(_ text: String) -> Bool {
        (1...255).contains(text.utf8.count) && !text.contains("\0")
    }

    // MARK: The document

    func getOpenAPIDocument(_ input: Operations.GetOpenAPIDocument.Input) async throws
        -> Operations.GetOpenAPIDocument.Output
    {
        .ok(.init(body: .yaml(HTTPBody(EmbeddedAPIDocument.yaml))))
    }

    // MARK: Services

    func getUserAccess(_ input: Operations.GetUserAccess.Input) async throws -> Operations.GetUserAccess.Output {
        switch await service(scope: "access:read") {
        case .failure(.unauthorized(let response)): return .unauthorized(response)
        case .failure(.forbidden(let response)): return .forbidden(response)
        case .failure(.unavailable(let response)): return .serviceUnavailable(response)
        case .failure(.rateLimited(let response)): return .tooManyRequests(response)
        case .success: break
        }
        let user = input.path.userId
        guard Self.isPlainText(user) else {
            return .badRequest(
                .init(
                    body: .applicationProblemJson(
                        Problems.problem(
                            "invalid-parameter", "Bad Request", status: 400,
                            detail: "user_id takes 1 to 255 bytes, no NUL"))))
        }
        do {
            return .ok(.init(body: .json(try await access(of: user))))
        } catch let error as PostgresError where error.code == .connectionFailed || error.code == .connectionLost {
            return .serviceUnavailable(unavailable(error))
        }
    }

    func recordUsage(_ input: Operations.RecordUsage.Input) async throws -> Operations.RecordUsage.Output {
        let caller: ServiceKeyStore.Caller
        switch await service(scope: "usage:write") {
        case .failure(.unauthorized(let response)): return .unauthorized(response)
        case .failure(.forbidden(let response)): return .forbidden(response)
        case .failure(.unavailable(let response)): return .serviceUnavailable(response)
        case .failure(.rateLimited(let response)): return .tooManyRequests(response)
        case .success(let found): caller = found
        }
        guard case .json(let request) = input.body else { return .undocumented(statusCode: 415, .init()) }
        var errors: [(field: String, reason: String)] = []
        if !Self.isPlainText(request.userId) { errors.append(("user_id", "takes 1 to 255 bytes, no NUL")) }
        if !Self.isPlainText(request.feature) { errors.append(("feature", "takes 1 to 255 bytes, no NUL")) }
        if !(1...1_000_000_000).contains(request.quantity) { errors.append(("quantity", "must be 1 to 1000000000")) }
        let key = input.headers.idempotencyKey
        if !(1...200).contains(key.utf8.count) || key.contains("\0") {
            errors.append(("Idempotency-Key", "takes 1 to 200 bytes, no NUL"))
        }
        guard errors.isEmpty else { return .unprocessableContent(Problems.unprocessable(errors)) }
        do {
            // Keys are per service: another service's key of the same text is another key.
            let answer = try await database.run {
                try BillingStore($0).recordUsage(
                    user: request.userId, feature: request.feature, quantity: request.quantity,
                    idempotencyKey: "api:\(caller.id):\(key)")
            }
            return .ok(
                .init(
                    body: .json(
                        .init(
                            allowed: answer.allowed, used: answer.used, limitValue: answer.limit,
                            remaining: answer.remaining, plan: answer.plan, periodEnd: answer.periodEnd,
                            repeated: answer.repeated))))
        } catch let error as PostgresError where error.sqlState == "SL409" || error.sqlState == "23505" {
            return .conflict(Problems.conflict("Idempotency-Key \(key) was used with another request"))
        } catch let error as PostgresError where error.code == .connectionFailed || error.code == .connectionLost {
            return .serviceUnavailable(unavailable(error))
        }
    }

    // MARK: The signed-in user

    func getMe(_ input: Operations.GetMe.Input) async throws -> Operations.GetMe.Output {
        let user: String
        switch await self.user() {
        case .success(let found): user = found
        case .failure(.unauthorized(let response)): return .unauthorized(response)
        case .failure(.rateLimited(let response)): return .tooManyRequests(response)
        case .failure(.forbidden), .failure(.unavailable): return .undocumented(statusCode: 500, .init())
        }
        do {
            return .ok(.init(body: .json(try await access(of: user))))
        } catch let error as PostgresError where error.code == .connectionFailed || error.code == .connectionLost {
            return .serviceUnavailable(unavailable(error))
        }
    }

    func listMyInvoices(_ input: Operations.ListMyInvoices.Input) async throws -> Operations.ListMyInvoices.Output {
        let user: String
        switch await self.user() {
        case .success(let found): user = found
        case .failure(.unauthorized(let response)): return .unauthorized(response)
        case .failure(.rateLimited(let response)): return .tooManyRequests(response)
        case .failure(.forbidden), .failure(.unavailable): return .undocumented(statusCode: 500, .init())
        }
        let limit = input.query.limit ?? 20
        guard (1...100).contains(limit) else {
            return .badRequest(
                .init(
                    body: .applicationProblemJson(
                        Problems.problem("invalid-parameter", "Bad Request", status: 400, detail: "limit is 1 to 100")))
            )
        }
        do {
            let json = try await database.run { try BillingStore($0).apiInvoices(of: user, limit: limit) }
            return .ok(.init(body: .json(try Self.decode(Components.Schemas.InvoiceList.self, json))))
        } catch let error as PostgresError where error.code == .connectionFailed || error.code == .connectionLost {
            return .serviceUnavailable(unavailable(error))
        }
    }
}
