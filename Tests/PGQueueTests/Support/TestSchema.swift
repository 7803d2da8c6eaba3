import Foundation
import PGQueue

/// The repository's `schema.sql`, read from the checkout: PGQueue does not embed it, its users apply it.
enum TestSchema {
    static let root = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    static let path = root.appendingPathComponent("schema.sql").path

    static let script: SchemaScript = {
        do {
            return try SchemaScript(sql: String(contentsOfFile: path, encoding: .utf8))
        } catch {
            fatalError("cannot read \(path): \(error)")
        }
    }()
}
