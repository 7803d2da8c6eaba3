import HTTPTypes
import Hummingbird

/// Cross-origin requests to the app's API from `SLUICE_CORS_ORIGINS` only: a browser page of another
/// origin gets no `Access-Control-Allow-Origin` and so cannot read an answer. Preflights of an allowed
/// origin are answered here (204); the webhook routes are left alone.
struct APICORSMiddleware: RouterMiddleware {
    typealias Context = BasicRequestContext

    /// Exact origins (`https://app.example.com`); empty allows none.
    let origins: Set<String>

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response)
        async throws -> Response
    {
        guard request.uri.path.hasPrefix("/v1/"), let origin = request.headers[.origin] else {
            return try await next(request, context)
        }
        let allowed = origins.contains(origin)
        if request.method == .options, request.headers[.accessControlRequestMethod] != nil {
            var headers: HTTPFields = [.vary: "Origin"]
            if allowed {
                headers[.accessControlAllowOrigin] = origin
                headers[.accessControlAllowMethods] = "GET, POST"
                headers[.accessControlAllowHeaders] = "Authorization, Content-Type, Idempotency-Key"
                headers[.accessControlMaxAge] = "600"
            }
            return Response(status: allowed ? .noContent : .forbidden, headers: headers)
        }
        var response = try await next(request, context)
        response.headers[.vary] = "Origin"
        if allowed {
            response.headers[.accessControlAllowOrigin] = origin
            response.headers[.accessControlExposeHeaders] = "Retry-After, WWW-Authenticate, Location"
        }
        return response
    }
}
