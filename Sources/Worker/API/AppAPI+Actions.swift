import Foundation
import Jobs
import OpenAPIRuntime
import PGQueue

/// The outputs of the routes that act on Stripe for the signed-in user, named alike so one function serves
/// them all: the generator's enum cases witness every requirement but ``answered(_:)``.
protocol UserActionOutput {
    /// What the job's result becomes in a 200.
    associatedtype Answer: Decodable & Sendable
    static func answered(_ answer: Answer) -> Self
    static func accepted(_ response: Components.Responses.Accepted) -> Self
    static func unauthorized(_ response: Components.Responses.Unauthorized) -> Self
    static func tooManyRequests(_ response: Components.Responses.TooManyRequests) -> Self
    static func unprocessableContent(_ response: Components.Responses.Unprocessable) -> Self
    static func serviceUnavailable(_ response: Components.Responses.Unavailable) -> Self
}

/// The outputs of the routes that change the user's subscription, which take turns: a 409 names the change
/// running now.
protocol SubscriptionChangeOutput: UserActionOutput {
    static func conflict(_ response: Components.Responses.ActionPending) -> Self
}

extension Operations.CreateMyCheckoutSession.Output: UserActionOutput {
    static func answered(_ answer: Components.Schemas.Session) -> Self { .ok(.init(body: .json(answer))) }
}

extension Operations.CreateMyPortalSession.Output: UserActionOutput {
    static func answered(_ answer: Components.Schemas.Session) -> Self { .ok(.init(body: .json(answer))) }
}

extension Operations.ChangeMyPlan.Output: SubscriptionChangeOutput {
    static func answered(_ answer: Components.Schemas.SubscriptionResult) -> Self { .ok(.init(body: .json(answer))) }
}

extension Operations.CancelMySubscription.Output: SubscriptionChangeOutput {
    static func answered(_ answer: Components.Schemas.SubscriptionResult) -> Self { .ok(.init(body: .json(answer))) }
}

extension Operations.ResumeMySubscription.Output: SubscriptionChangeOutput {
    static func answered(_ answer: Components.Schemas.SubscriptionResult) -> Self { .ok(.init(body: .json(answer))) }
}

/// What a Stripe action route does after its checks: start the job (unless a field is wrong), or answer.
enum ActionPreparation<Output> {
    case start(payload: [String: String], errors: [(field: String, reason: String)])
    case answer(Output)
}

/// A job started through the API as `sluice.job_for` shows it, its result read as the route's answer.
private struct JobView<Answer: Decodable & Sendable>: Decodable, Sendable {
    var state: String
    var result: Answer?
    var error: String?

    var isOver: Bool { state == "succeeded" || state == "failed" }
}

extension AppAPI {
    // MARK: Stripe actions for the signed-in user

    func createMyCheckoutSession(_ input: Operations.CreateMyCheckoutSession.Input) async throws
        -> Operations.CreateMyCheckoutSession.Output
    {
        guard case .json(let request) = input.body else { return .undocumented(statusCode: 415, .init()) }
        return try await act(kind: "stripe.create_checkout_session") { user in
            // A second subscription is a double click or a second tab, not what the user wants.
            let access = try await self.access(of: user)
            if access.hasAccess, let status = access.status, ["active", "trialing", "past_due"].contains(status) {
                return .answer(
                    .conflict(
                        .init(
                            body: .applicationProblemJson(
                                Problems.problem(
                                    "already-subscribed", "Conflict", status: 409,
                                    detail: "the user already has a \(status) subscription; change its plan or open "
                                        + "the billing portal")))))
            }
            var errors = try await priceErrors(request.price)
            errors += redirectErrors(["success_url": request.successUrl, "cancel_url": request.cancelUrl])
            let payload = [
                "user_id": user, "price": request.price, "success_url": request.successUrl,
                "cancel_url": request.cancelUrl,
            ]
            return .start(payload: payload, errors: errors)
        }
    }

    func createMyPortalSession(_ input: Operations.CreateMyPortalSession.Input) async throws
        -> Operations.CreateMyPortalSession.Output
    {
        guard case .json(let request) = input.body else { return .undocumented(statusCode: 415, .init()) }
        return try await act(kind: "stripe.create_portal_session") { user in
            .start(
                payload: ["user_id": user, "return_url": request.returnUrl],
                errors: redirectErrors(["return_url": request.returnUrl]))
        }
    }

    func changeMyPlan(_ input: Operations.ChangeMyPlan.Input) async throws -> Operations.ChangeMyPlan.Output {
        guard case .json(let request) = input.body else { return .undocumented(statusCode: 415, .init()) }
        return try await changeSubscription(kind: "stripe.change_plan") { user in
            if let missing = try await noSubscription(user) { return .answer(.notFound(missing)) }
            // Proration is Stripe's default both ways, never the user's choice: choosing none on the way up and
            // prorations on the way down would credit time never paid for.
            var payload = ["user_id": user, "price": request.price]
            payload["at"] = request.at?.rawValue
            return .start(payload: payload, errors: try await priceErrors(request.price))
        }
    }

    func cancelMySubscription(_ input: Operations.CancelMySubscription.Input) async throws
        -> Operations.CancelMySubscription.Output
    {
        var at: String?
        if case .json(let request) = input.body { at = request.at?.rawValue }
        return try await changeSubscription(kind: "stripe.cancel_subscription") { user in
            if let missing = try await noSubscription(user) { return .answer(.notFound(missing)) }
            var payload = ["user_id": user]
            payload["at"] = at
            return .start(payload: payload, errors: [])
        }
    }

    func resumeMySubscription(_ input: Operations.ResumeMySubscription.Input) async throws
        -> Operations.ResumeMySubscription.Output
    {
        try await changeSubscription(kind: "stripe.resume_subscription") { user in
            if let missing = try await noSubscription(user) { return .answer(.notFound(missing)) }
            return .start(payload: ["user_id": user], errors: [])
        }
    }

    /// The kinds that change a user's subscription. Two of them running at once (a double click, two tabs)
    /// reach Stripe in either order, and the change the user made last may not be the one that stays: so
    /// they take turns (`sluice.start_exclusive_job_for`). A new change replaces one still waiting or
    /// retrying, waits (409) while one is at Stripe, and the same request again follows the pending job.
    static let subscriptionChangeKinds = [
        "stripe.change_plan", "stripe.cancel_subscription", "stripe.resume_subscription",
    ]

    /// ``act(kind:conflict:prepare:)`` for a change to the user's subscription: one at a time.
    private func changeSubscription<Output: SubscriptionChangeOutput>(
        kind: String,
        prepare: (String) async throws -> ActionPreparation<Output>
    ) async throws -> Output {
        try await act(
            kind: kind, conflict: { .conflict(Problems.actionPending(jobID: $0, kind: $1)) }, prepare: prepare)
    }

    /// Starts a Stripe action job for the signed-in user and waits up to `SLUICE_API_WAIT_SECONDS` for it:
    /// its result is the 200, a failure the 422 `action-refused`, and a job still going the 202 with its URL.
    ///
    /// - Parameters:
    ///   - conflict: for a kind of ``subscriptionChangeKinds``, the answer while another of them runs (given
    ///     its job id and kind); nil starts the job as it is.
    ///   - prepare: the job's payload for this user, and what is wrong with the request (nothing is started
    ///     then).
    private func act<Output: UserActionOutput>(
        kind: String,
        conflict: ((Int64, String) -> Output)? = nil,
        prepare: (String) async throws -> ActionPreparation<Output>
    ) async throws -> Output {
        let user: String
        switch await self.user() {
        case .success(let found): user = found
        case .failure(.unauthorized(let response)): return .unauthorized(response)
        case .failure(.rateLimited(let response)): return .tooManyRequests(response)
        case .failure(.unavailable(let response)): return .serviceUnavailable(response)
        case .failure(.forbidden):
            return .unauthorized(Problems.unauthorized("this route is for a signed-in user", tokenPresented: true))
        }
        let caller = "user:\(user)"
        // A verified user came with a token; without one there is nothing to count against.
        guard let token = APIRequest.token else {
            return .unauthorized(Problems.unauthorized("a Clerk session token is required", tokenPresented: false))
        }
        // One Stripe client and its rate limit serve every user: one user's clicks must not use them up.
        if let wait = actionLimiter.take(caller: caller, token: token) {
            return .tooManyRequests(Problems.tooManyRequests(retryAfter: wait, limit: "SLUICE_API_ACTION_RATE_LIMIT"))
        }
        do {
            let (payload, errors): ([String: String], [(field: String, reason: String)])
            switch try await prepare(user) {
            case .answer(let output): return output
            case .start(let found, let wrong): (payload, errors) = (found, wrong)
            }
            guard errors.isEmpty else { return .unprocessableContent(Problems.unprocessable(errors)) }
            let json = String(decoding: try JSONEncoder().encode(payload), as: UTF8.self)
            let id: Int64
            if let conflict {
                let start = try await database.run {
                    try JobQueue().startExclusiveJob(
                        kind: kind, payload: json, for: caller, exclusiveWith: Self.subscriptionChangeKinds, on: $0)
                }
                switch start {
                case .started(let job), .alreadyPending(let job): id = job
                case .blocked(let running, let runningKind): return conflict(running, runningKind)
                }
            } else {
                id = try await database.run { try JobQueue().startJob(kind: kind, payload: json, for: caller, on: $0) }
            }
            let view = try await jobs.wait(for: id, seconds: waitSeconds) {
                let json = try await database.run { try JobQueue().job(id, for: caller, on: $0) }
                // Gone at once: erased with its user. Nothing more will come.
                guard let json else { return (answer: JobView<Output.Answer>?.none, done: true) }
                let view = try Self.decode(JobView<Output.Answer>.self, json)
                return (answer: view, done: view.isOver)
            }
            guard let view, view.state != "failed" else {
                return .unprocessableContent(
                    .init(
                        body: .applicationProblemJson(
                            Problems.refused(view?.error ?? "the job was erased with its user", jobID: id))))
            }
            if view.state == "succeeded", let result = view.result { return .answered(result) }
            return .accepted(
                .init(
                    headers: .init(location: "/v1/jobs/\(id)"),
                    body: .json(.init(jobId: id, statusUrl: "/v1/jobs/\(id)"))))
        } catch let error as PostgresError where error.code == .connectionFailed || error.code == .connectionLost {
            return .serviceUnavailable(unavailable(error))
        }
    }

    /// The user's access, as `GET /v1/me` shows it.
    func access(of user: String) async throws -> Components.Schemas.Access {
        try Self.decode(
            Components.Schemas.Access.self, try await database.run { try BillingStore($0).apiAccess(of: user) })
    }

    /// A 404 for a user without a subscription to change, cancel or resume: checked here, so a made-up action
    /// never becomes a failed job in the dead letters.
    private func noSubscription(_ user: String) async throws -> Components.Responses.NotFound? {
        try await access(of: user).status == nil
            ? Problems.notFound("the user has no subscription; start one with /v1/me/checkout-session") : nil
    }

    /// A price a user may not choose: not plain text, or not an active recurring price of the product.
    private func priceErrors(_ price: String) async throws -> [(field: String, reason: String)] {
        guard Self.isPlainText(price) else { return [("price", "takes 1 to 255 bytes, no NUL")] }
        let onSale = try await database.run { try BillingStore($0).isOnSale(price: price) }
        return onSale ? [] : [("price", "\(price) is not an active recurring price of this product")]
    }

    /// The redirect URLs that `SLUICE_ALLOWED_REDIRECT_HOSTS` does not allow, by field.
    private func redirectErrors(_ urls: KeyValuePairs<String, String>) -> [(field: String, reason: String)] {
        urls.compactMap { field, url in redirects.refusal(of: url).map { (field, $0) } }
    }

    // MARK: Jobs

    func getJob(_ input: Operations.GetJob.Input) async throws -> Operations.GetJob.Output {
        let caller: String
        if APIRequest.token?.isServiceKey == true {
            switch await service(scope: nil) {
            case .success(let key): caller = "service:\(key.id)"
            case .failure(.unauthorized(let response)): return .unauthorized(response)
            case .failure(.unavailable(let response)): return .serviceUnavailable(response)
            case .failure(.rateLimited(let response)): return .tooManyRequests(response)
            case .failure(.forbidden): return .undocumented(statusCode: 403, .init())
            }
        } else {
            switch await user() {
            case .success(let user): caller = "user:\(user)"
            case .failure(.unauthorized(let response)): return .unauthorized(response)
            case .failure(.rateLimited(let response)): return .tooManyRequests(response)
            case .failure(.unavailable(let response)): return .serviceUnavailable(response)
            case .failure(.forbidden): return .undocumented(statusCode: 403, .init())
            }
        }
        let id = input.path.id
        do {
            guard let json = try await database.run({ try JobQueue().job(id, for: caller, on: $0) }) else {
                return .notFound(Problems.notFound("no job \(id) was started by this caller, or its result is gone"))
            }
            return .ok(.init(body: .json(try Self.decode(Components.Schemas.Job.self, json))))
        } catch let error as PostgresError where error.code == .connectionFailed || error.code == .connectionLost {
            return .serviceUnavailable(unavailable(error))
        }
    }
}
