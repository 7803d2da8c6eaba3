import Foundation

// Writes a Swift file holding a text file as a raw string literal, for the EmbedFiles
// plugin: `SchemaEmbedder INPUT OUTPUT_SWIFT [ENUM PROPERTY]` (default EmbeddedSchema sql).
let arguments = CommandLine.arguments
guard arguments.count == 3 || arguments.count == 5 else {
    FileHandle.standardError.write(Data("usage: SchemaEmbedder INPUT OUTPUT_SWIFT [ENUM PROPERTY]\n".utf8))
    exit(2)
}
let (name, property) = arguments.count == 5 ? (arguments[3], arguments[4]) : ("EmbeddedSchema", "sql")
let text = try String(contentsOfFile: arguments[1], encoding: .utf8)
let delimiter = String(repeating: "#", count: 4)
guard !text.contains("\"\"\"\(delimiter)") else {
    FileHandle.standardError.write(Data("SchemaEmbedder: \(arguments[1]) contains the raw string delimiter\n".utf8))
    exit(1)
}
let source = """
    // Generated from \(URL(fileURLWithPath: arguments[1]).lastPathComponent) at build time; edit that file instead.
    enum \(name) {
        static let \(property) = \(delimiter)\"\"\"
    \(text)
    \"\"\"\(delimiter)
    }

    """
try source.write(toFile: arguments[2], atomically: true, encoding: .utf8)
