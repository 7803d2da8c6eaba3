import Foundation
import Logging

/// Writes one line per event to standard error, fit for journald: `<level> message key=value …`.
///
/// Under systemd (`JOURNAL_STREAM` set) each line starts with a syslog priority prefix (`<6>`), which
/// journald turns into the entry's priority, and carries no timestamp (journald adds its own).
/// Elsewhere a line starts with an ISO 8601 time. Values with spaces or quotes are quoted, so a line
/// splits back into its fields.
struct JournalLogHandler: LogHandler {
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level
    let label: String
    let underSystemd: Bool

    init(label: String, level: Logger.Level, underSystemd: Bool) {
        self.label = label
        self.logLevel = level
        self.underSystemd = underSystemd
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        var line = ""
        if underSystemd {
            line += "<\(Self.syslogPriority(event.level))>"
        } else {
            line += Date().formatted(.iso8601) + " "
        }
        line += "\(event.level) \(event.message)"
        let merged = metadata.merging(event.metadata ?? [:]) { _, new in new }
        for key in merged.keys.sorted() {
            line += " \(key)=\(Self.quoted("\(merged[key]!)"))"
        }
        line += "\n"
        // One write(2) per line keeps lines from different threads whole.
        line.withUTF8 { bytes in
            _ = write(STDERR_FILENO, bytes.baseAddress, bytes.count)
        }
    }

    static func syslogPriority(_ level: Logger.Level) -> Int {
        switch level {
        case .trace, .debug: 7
        case .info: 6
        case .notice: 5
        case .warning: 4
        case .error: 3
        case .critical: 2
        }
    }

    static func quoted(_ value: String) -> String {
        // Unicode scalars, not Characters: splitting into Characters (grapheme clusters) cost more than the
        // rest of a webhook's line, and a Character can hide a quote or a line break behind a combining mark.
        let needsQuotes =
            value.isEmpty
            || value.unicodeScalars.contains {
                $0 == " " || $0 == "\"" || $0 == "=" || $0.value < 0x20 || Self.isLineBreak($0)
            }
        guard needsQuotes else { return value }
        // Scalars, not Characters: "\r\n" is one Character, and written raw it would start a forged line.
        var escaped = ""
        for scalar in value.unicodeScalars {
            switch scalar {
            case "\"": escaped += "\\\""
            case "\\": escaped += "\\\\"
            case "\n": escaped += "\\n"
            case "\r": escaped += "\\r"
            case _ where scalar.value < 0x20 || Self.isLineBreak(scalar):
                escaped += "\\u{\(String(scalar.value, radix: 16))}"
            default: escaped.unicodeScalars.append(scalar)
            }
        }
        return "\"\(escaped)\""
    }

    /// NEL, LINE SEPARATOR and PARAGRAPH SEPARATOR: line breaks beyond ASCII's.
    private static func isLineBreak(_ scalar: Unicode.Scalar) -> Bool {
        scalar.value == 0x85 || scalar.value == 0x2028 || scalar.value == 0x2029
    }
}
