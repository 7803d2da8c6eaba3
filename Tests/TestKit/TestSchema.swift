import Foundation
public import PGQueue

/// The repository's `schema.sql`, read from the checkout: PGQueue does not embed it, its users apply it.
public enum TestSchema {
    public static let path = Repository.url("schema.sql").path

    public static let script: SchemaScript = {
        do {
            return try SchemaScript(sql: String(contentsOfFile: path, encoding: .utf8))
        } catch {
            fatalError("cannot read \(path): \(error)")
        }
    }()
}
