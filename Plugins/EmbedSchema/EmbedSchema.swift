import Foundation
import PackagePlugin

/// Compiles the repository's `schema.sql` into the Jobs module, so `sluice migrate` applies exactly
/// the file that `psql -f schema.sql` applies, with no copy to keep in step.
@main
struct EmbedSchema: BuildToolPlugin {
    func createBuildCommands(context: PluginContext, target: any Target) throws -> [Command] {
        let schema = context.package.directoryURL.appending(path: "schema.sql")
        let output = context.pluginWorkDirectoryURL.appending(path: "EmbeddedSchema.swift")
        return [
            .buildCommand(
                displayName: "Embedding schema.sql",
                executable: try context.tool(named: "SchemaEmbedder").url,
                arguments: [schema.path, output.path],
                inputFiles: [schema],
                outputFiles: [output]
            )
        ]
    }
}
