import Foundation
import Jobs
import PGQueue

/// A database of the benchmark's own, with the schema and a plain table for the ceilings.
struct BenchDatabase: Sendable {
    let adminURL: String
    let name = "sluice_bench_\(UInt32.random(in: 0...UInt32.max))"
    let url: String

    init(adminURL: String) throws {
        self.adminURL = adminURL
        if adminURL.hasPrefix("postgres://") || adminURL.hasPrefix("postgresql://"),
            var components = URLComponents(string: adminURL)
        {
            components.path = "/\(name)"
            url = components.string ?? adminURL
        } else {
            url = "\(adminURL) dbname=\(name)"
        }
        let admin = try PostgresConnection(connectionString: adminURL)
        try admin.run(script: "CREATE DATABASE \(name)", context: "creating the benchmark database")
        let connection = try PostgresConnection(connectionString: url)
        try SluiceSchema.script.apply(on: connection)
        try connection.run(
            script: """
                CREATE TABLE bench_plain (
                    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                    payload jsonb NOT NULL,
                    created_at timestamptz NOT NULL DEFAULT now()
                )
                """,
            context: "creating the ceiling table")
    }

    /// Creates the roles of deploy/roles.sql (again, harmlessly) and grants them what they may do, as a
    /// deployment does before its processes connect with ``url(as:)``.
    func createRoles(on connection: PostgresConnection) throws {
        try connection.run(
            script: try String(
                contentsOf: WebhookIngest.repositoryRoot.appendingPathComponent("deploy/roles.sql"), encoding: .utf8),
            context: "applying deploy/roles.sql")
    }

    /// The database's URL for a login role of deploy/roles.sql, as a deployed process connects: the
    /// throwaway cluster trusts local connections, so no password.
    func url(as role: String) -> String {
        if var components = URLComponents(string: url), components.scheme?.hasPrefix("postgres") == true {
            components.user = role
            components.password = nil
            return components.string ?? url
        }
        return url + " user=\(role)"
    }

    func connect() throws -> PostgresConnection {
        try PostgresConnection(connectionString: url)
    }

    func drop() {
        let admin = try? PostgresConnection(connectionString: adminURL)
        try? admin?.run(
            script: "DROP DATABASE IF EXISTS \(name) WITH (FORCE)", context: "dropping the benchmark database")
    }
}

extension Duration {
    var seconds: Double {
        let parts = components
        return Double(parts.seconds) + Double(parts.attoseconds) / 1e18
    }

    var milliseconds: Double { seconds * 1000 }
}

/// Prints the figures as an aligned table.
final class Report {
    private let started = ContinuousClock.now

    func header(connection: PostgresConnection, settings: Settings) {
        let version =
            (try? connection.query("SHOW server_version", context: "version").single().decode(String.self, at: 0))
            ?? "?"
        let fsync = (try? connection.query("SHOW fsync", context: "fsync").single().decode(String.self, at: 0)) ?? "?"
        emit(
            "Sluice queue benchmark: nproc \(ProcessInfo.processInfo.activeProcessorCount), PostgreSQL \(version), "
                + "fsync=\(fsync); medians of \(settings.rounds) interleaved rounds "
                + "(burn-down: \(settings.burnDownRounds))")
        emit(pad("figure", 56) + pad("sluice", 20) + pad("ceiling", 20) + "ratio")
    }

    func rate(
        _ name: String, _ values: [Double], ceiling: [Double], note: String, unit: String = "jobs/s",
        ceilingUnit: String = "rows/s"
    ) {
        let value = median(values)
        let reference = median(ceiling)
        emit(
            pad(name, 56) + pad("\(Int(value).formatted()) \(unit)", 20)
                + pad("\(Int(reference).formatted()) \(ceilingUnit)", 20)
                + String(format: "%.2fx", value / reference) + "  (ceiling: \(note))")
    }

    /// Like ``rate(_:_:ceiling:note:unit:ceilingUnit:)`` for rounds that each measured both sides at one
    /// moment: the ratio is the median of the rounds' own ratios, which keeps each pair together when the
    /// machine drifts between rounds.
    func pairedRate(
        _ name: String, _ values: [Double], ceiling: [Double], note: String, unit: String = "jobs/s",
        ceilingUnit: String = "rows/s"
    ) {
        let ratios = zip(values, ceiling).map { $0 / $1 }
        emit(
            pad(name, 56) + pad("\(Int(median(values)).formatted()) \(unit)", 20)
                + pad("\(Int(median(ceiling)).formatted()) \(ceilingUnit)", 20)
                + String(format: "%.2fx", median(ratios)) + "  (ceiling: \(note); median of the rounds' ratios)")
    }

    func value(_ name: String, _ text: String) {
        emit(pad(name, 56) + text)
    }

    func latency(_ name: String, _ samples: [Double], reference: [Double]? = nil) {
        let p50 = percentile(samples, 0.50)
        let p99 = percentile(samples, 0.99)
        var line =
            pad(name, 56) + pad(String(format: "p50 %.2f ms", p50), 20) + pad(String(format: "p99 %.2f ms", p99), 20)
        if let reference {
            line += String(format: "p50 %+.2f ms vs bare", p50 - percentile(reference, 0.50))
        }
        emit(line + "  (\(samples.count) samples)")
    }

    func footer() {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        emit(pad("peak RSS of the benchmark process", 56) + "\(usage.ru_maxrss / 1024) MiB")
        emit(String(format: "total time %.0f s", (ContinuousClock.now - started).seconds))
    }

    /// Writes a line at once, so a long run shows its figures as they come.
    private func emit(_ line: String) {
        FileHandle.standardOutput.write(Data((line + "\n").utf8))
    }

    private func median(_ values: [Double]) -> Double { percentile(values, 0.5) }

    private func pad(_ text: String, _ width: Int) -> String {
        text.count >= width ? text + " " : text + String(repeating: " ", count: width - text.count)
    }
}

/// The value at `fraction` (0.5: the median) of `values`, nearest rank; NaN when there are none.
func percentile(_ values: [Double], _ fraction: Double) -> Double {
    guard !values.isEmpty else { return .nan }
    let sorted = values.sorted()
    return sorted[min(sorted.count - 1, Int((Double(sorted.count - 1) * fraction).rounded()))]
}
