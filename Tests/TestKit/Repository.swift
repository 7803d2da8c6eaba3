public import Foundation

/// The checkout the tests run from: its schema, fixtures, scripts and deploy files.
public enum Repository {
    /// The repository's root folder (this file is Tests/TestKit/Repository.swift).
    public static let root = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// A file of the checkout, by its path from the root.
    public static func url(_ relativePath: String) -> URL {
        root.appendingPathComponent(relativePath)
    }

    /// The text of a file of the checkout.
    public static func text(_ relativePath: String) throws -> String {
        try String(contentsOf: url(relativePath), encoding: .utf8)
    }

    /// A file under Tests/Fixtures, exactly as stored (see its README for the sources).
    public static func fixture(_ relativePath: String) throws -> [UInt8] {
        Array(try Data(contentsOf: url("Tests/Fixtures/\(relativePath)")))
    }
}
