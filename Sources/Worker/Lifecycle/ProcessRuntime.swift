import Foundation
import Logging
import Metrics
import Prometheus

/// What every `sluice` process sets up first: logging fit for journald and the Prometheus registry.
struct ProcessRuntime: Sendable {
    let logger: Logger
    let registry: PrometheusCollectorRegistry
    let metrics: SluiceMetrics

    /// Bootstraps the process-wide logging and metrics systems; call once, at start-up.
    static func bootstrap(logLevel: Logger.Level) -> ProcessRuntime {
        let underSystemd = ProcessInfo.processInfo.environment["JOURNAL_STREAM"] != nil
        LoggingSystem.bootstrap { label in
            JournalLogHandler(label: label, level: logLevel, underSystemd: underSystemd)
        }
        let registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        // Handler durations from sub-millisecond no-ops to multi-minute jobs.
        factory.defaultDurationHistogramBuckets = [
            .microseconds(500), .milliseconds(1), .milliseconds(5), .milliseconds(10), .milliseconds(50),
            .milliseconds(100), .milliseconds(500), .seconds(1), .seconds(5), .seconds(10), .seconds(30),
            .seconds(60), .seconds(300),
        ]
        MetricsSystem.bootstrap(factory)
        let metrics = SluiceMetrics(factory: factory)
        metrics.primeCounters()
        return ProcessRuntime(logger: Logger(label: "sluice"), registry: registry, metrics: metrics)
    }
}
