import Foundation
import PackagePlugin

/// Compiles the app API's OpenAPI document into the Worker module, so `GET /v1/openapi.yaml` serves
/// exactly the document the server's code was generated from.
@main
struct EmbedAPIDocument: BuildToolPlugin {
    func createBuildCommands(context: PluginContext, target: any Target) throws -> [Command] {
        let document = context.package.directoryURL.appending(path: "Sources/\(target.name)/API/openapi.yaml")
        let output = context.pluginWorkDirectoryURL.appending(path: "EmbeddedAPIDocument.swift")
        return [
            .buildCommand(
                displayName: "Embedding the OpenAPI document",
                executable: try context.tool(named: "SchemaEmbedder").url,
                arguments: [document.path, output.path, "EmbeddedAPIDocument", "yaml"],
                inputFiles: [document],
                outputFiles: [output]
            )
        ]
    }
}
