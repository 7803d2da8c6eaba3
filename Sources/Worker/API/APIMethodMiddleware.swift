import Foundation
import HTTPTypes
import Hummingbird

/// `405 Method Not Allowed` with `Allow` for a method the API's document does not list on a path it has
/// (`DELETE /v1/me`), where the router alone would answer 404 as if the path did not exist.
///
/// The table comes from the document compiled into the binary, so it cannot drift from the routes the
/// generator made from the same document.
struct APIMethodMiddleware: RouterMiddleware {
    typealias Context = BasicRequestContext

    /// A path of the document, its `{parameters}` matching any one segment, and its methods.
    struct Route: Equatable {
        var segments: [Substring?]
        var methods: [String]

        func matches(_ path: Substring) -> Bool {
            let parts = path.split(separator: "/", omittingEmptySubsequences: false).dropFirst()
            return parts.count == segments.count
                && zip(parts, segments).allSatisfy { part, segment in segment.map { $0 == part } ?? !part.isEmpty }
        }
    }

    let routes: [Route]

    init(document: String = EmbeddedAPIDocument.yaml) {
        routes = Self.routes(in: document)
    }

    /// The `paths:` of an OpenAPI document in this repository's layout: a path two spaces in, its
    /// operations four spaces in.
    static func routes(in document: String) -> [Route] {
        var routes: [Route] = []
        var inPaths = false
        for line in document.split(separator: "\n", omittingEmptySubsequences: false) {
            if !line.hasPrefix(" "), !line.isEmpty { inPaths = line == "paths:" }
            guard inPaths else { continue }
            if line.hasPrefix("  /"), line.hasSuffix(":") {
                let path = line.dropFirst(2).dropLast()
                let segments = path.split(separator: "/", omittingEmptySubsequences: false).dropFirst().map {
                    $0.hasPrefix("{") ? nil : $0
                }
                routes.append(Route(segments: Array(segments), methods: []))
            } else if line.hasPrefix("    "), !line.hasPrefix("     "), line.hasSuffix(":"), !routes.isEmpty {
                let method = line.trimmingCharacters(in: .whitespaces).dropLast().uppercased()
                if ["GET", "POST", "PUT", "PATCH", "DELETE"].contains(method) {
                    routes[routes.count - 1].methods.append(method)
                }
            }
        }
        return routes
    }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response)
        async throws -> Response
    {
        let path = request.uri.path[...]
        guard path.hasPrefix("/v1/"), request.method != .options,
            let route = routes.first(where: { $0.matches(path) })
        else { return try await next(request, context) }
        var allowed = route.methods
        if allowed.contains("GET") { allowed.append("HEAD") }
        guard !allowed.contains(request.method.rawValue) else { return try await next(request, context) }
        let problem = Problems.problem(
            "method-not-allowed", "Method Not Allowed", status: 405,
            detail: "\(request.method.rawValue) is not a method of \(path); it takes \(allowed.joined(separator: ", "))"
        )
        return Response(
            status: .methodNotAllowed,
            headers: [.allow: allowed.joined(separator: ", "), .contentType: "application/problem+json"],
            body: .init(byteBuffer: ByteBuffer(bytes: (try? JSONEncoder().encode(problem)) ?? Data())))
    }
}
