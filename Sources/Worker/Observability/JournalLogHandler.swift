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
        // Bytes first: a webhook logs a few ASCII values per request, and splitting them into Characters
        // cost more than the rest of the line. Non-ASCII text takes the Character test (Unicode newlines).
        let isASCII = value.utf8.allSatisfy { $0 < 0x80 }
        let needsQuotes =
            value.isEmpty
            || (isASCII
                ? value.utf8.contains {
                    $0 == 0x20 || $0 == 0x22 || $0 == 0x3D || $0 == 0x0A || $0 == 0x0D || $0 == 0x0B || $0 == 0x0C
                }
                : value.contains { $0 == " " || $0 == "\"" || $0 == "=" || $0.isNewline })
        guard needsQuotes else { return value }
        var escaped = ""
        for character in value {
            switch character {
            case "\"": escaped += "\\\""
            case "\\": escaped += "\\\\"
            case "\n": escaped += "\\n"
            case "\r": escaped += "\\r"
            default: escaped.append(character)
            }
        }
        return "\"\(escaped)\""
    }
}
