import Foundation

// Writes a Swift file holding schema.sql's text as a raw string literal, for the EmbedSchema plugin.
let arguments = CommandLine.arguments
guard arguments.count == 3 else {
    FileHandle.standardError.write(Data("usage: SchemaEmbedder SCHEMA_SQL OUTPUT_SWIFT\n".utf8))
    exit(2)
}
let sql = try String(contentsOfFile: arguments[1], encoding: .utf8)
let delimiter = String(repeating: "#", count: 4)
guard !sql.contains("\"\"\"\(delimiter)") else {
    FileHandle.standardError.write(Data("SchemaEmbedder: schema.sql contains the raw string delimiter\n".utf8))
    exit(1)
}
let source = """
    // Generated from schema.sql by the EmbedSchema plugin at build time; edit schema.sql instead.
    enum EmbeddedSchema {
        static let sql = \(delimiter)\"\"\"
    \(sql)
    \"\"\"\(delimiter)
    }

    """
try source.write(toFile: arguments[2], atomically: true, encoding: .utf8)
