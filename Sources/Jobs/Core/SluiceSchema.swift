public import PGQueue

/// The whole database schema this build of Sluice was made with: the repository's `schema.sql`, compiled
/// into this module by the EmbedFiles plugin.
///
/// It lives here and not in PGQueue because it holds the billing schema as well as the queue's; PGQueue
/// only knows how to apply a ``SchemaScript`` and read ``InstalledSchema``.
public enum SluiceSchema {
    /// `schema.sql`, with the versions it declares.
    public static let script: SchemaScript = {
        do {
            return try SchemaScript(sql: EmbeddedSchema.sql)
        } catch {
            preconditionFailure("the embedded schema.sql is not Sluice's schema: \(error)")
        }
    }()

    /// The schema version this build was made for.
    public static var version: Int { script.version }
}
