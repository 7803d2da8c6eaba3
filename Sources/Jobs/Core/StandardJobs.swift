/// The handlers a `sluice` process runs.
public enum StandardJobs {
    /// Every built-in kind; `testJobs` adds the crash and mark kinds used by fault tests.
    public static func registry(testJobs: Bool) -> JobRegistry {
        var registry = JobRegistry([NoopJob(allowsCrash: testJobs)])
        if testJobs { registry.register(TestMarkJob()) }
        return registry
    }
}
