import Foundation
import PGQueue
import TestKit

/// psql and pg_dump, run against a test database as an operator would.
enum SchemaTools {
    /// Runs `psql -X -q -v ON_ERROR_STOP=1 -f file` and returns what it printed on standard error.
    @discardableResult
    static func psql(_ url: String, file: String) throws -> String {
        let (status, _, errors) = try run(["psql", url, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", file])
        guard status == 0 else { throw ToolFailure(message: "psql -f \(file) failed: \(errors)") }
        return errors
    }

    /// `pg_dump --schema-only` without owners, normalised so that two databases with the same objects
    /// compare equal whatever order their columns were added in: the column lines of each CREATE TABLE
    /// and each run of COMMENT ON COLUMN are sorted, and comments, SET lines and pg_dump's per-run
    /// \restrict keys are left out.
    static func normalisedSchemaDump(_ url: String) throws -> [String] {
        let (status, output, errors) = try run(["pg_dump", "--schema-only", "--no-owner", url])
        guard status == 0 else { throw ToolFailure(message: "pg_dump failed: \(errors)") }
        var lines: [String] = []
        var columns: [String]?
        var comments: [String] = []
        for raw in output.split(separator: "\n", omittingEmptySubsequences: true) {
            let line = String(raw)
            if line.hasPrefix("--") || line.hasPrefix("SET ") || line.hasPrefix("SELECT pg_catalog.set_config")
                || line.hasPrefix("\\restrict") || line.hasPrefix("\\unrestrict")
            {
                continue
            }
            if var open = columns {
                if line.hasPrefix(")") {
                    let sorted = open.map { $0.hasSuffix(",") ? String($0.dropLast()) : $0 }.sorted()
                    lines += sorted
                    lines.append(line)
                    columns = nil
                } else {
                    open.append(line)
                    columns = open
                }
                continue
            }
            if line.hasPrefix("COMMENT ON COLUMN") {
                comments.append(line)
                continue
            }
            lines += comments.sorted()
            comments = []
            lines.append(line)
            if line.hasPrefix("CREATE TABLE") { columns = [] }
        }
        return lines + comments.sorted()
    }

    struct ToolFailure: Error, CustomStringConvertible {
        var message: String
        var description: String { message }
    }

    private static func run(_ arguments: [String]) throws -> (Int32, String, String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = arguments
        let output = Pipe()
        let errors = Pipe()
        process.standardOutput = output
        process.standardError = errors
        try process.run()
        // Read before waiting: a dump larger than the pipe's buffer would block the child otherwise.
        let out = output.fileHandleForReading.readDataToEndOfFile()
        let err = errors.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: out, as: UTF8.self), String(decoding: err, as: UTF8.self))
    }
}
