import Foundation
import PackagePlugin

/// Compiles a text file of the repository into a module, so the binary carries exactly the file the
/// repository holds, with no copy to keep in step: `schema.sql` into Jobs (`sluice migrate` applies what
/// `psql -f schema.sql` applies), the API's OpenAPI document into Worker (`GET /v1/openapi.yaml` serves
/// the document the server was generated from).
@main
struct EmbedFiles: BuildToolPlugin {
    /// Per target: the file (from the package's root), and the enum and property that hold its text.
    static let files: [String: (path: String, enumName: String, property: String)] = [
        "Jobs": ("schema.sql", "EmbeddedSchema", "sql"),
        "Worker": ("Sources/Worker/API/openapi.yaml", "EmbeddedAPIDocument", "yaml"),
    ]

    func createBuildCommands(context: PluginContext, target: any Target) throws -> [Command] {
        guard let file = Self.files[target.name] else { return [] }
        let input = context.package.directoryURL.appending(path: file.path)
        let output = context.pluginWorkDirectoryURL.appending(path: "\(file.enumName).swift")
        return [
            .buildCommand(
                displayName: "Embedding \(file.path)",
                executable: try context.tool(named: "SchemaEmbedder").url,
                arguments: [input.path, output.path, file.enumName, file.property],
                inputFiles: [input],
                outputFiles: [output]
            )
        ]
    }
}
