import Foundation
import PGQueue

/// `sluice.api_keys`: creating, listing, revoking and checking the services' keys.
struct ServiceKeyStore {
    let connection: PostgresConnection

    /// A stored key, without anything that would let one call the API.
    struct Entry: Sendable {
        var id: Int64
        var name: String
        var prefix: String
        var scopes: [String]
        var createdAt: Date
        var lastUsedAt: Date?
        var revokedAt: Date?
    }

    /// Who a presented key belongs to.
    struct Caller: Sendable, Equatable {
        var id: Int64
        var name: String
        var scopes: [String]
    }

    /// Stores a new key's hash under `name` with `scopes`; returns its id.
    func create(_ key: ServiceKey, name: String, scopes: [String]) throws(PostgresError) -> Int64 {
        try connection.query(
            """
            INSERT INTO sluice.api_keys (name, prefix, secret_hash, scopes)
            VALUES ($1, $2, decode($3, 'hex'), $4::text[]) RETURNING id
            """, [name, key.prefix, Self.hex(key.hash), scopes], context: "storing a service key"
        ).single().decode(Int64.self, at: 0)
    }

    /// Every key, newest first, revoked ones included.
    func list() throws(PostgresError) -> [Entry] {
        try connection.query(
            """
            SELECT id, name, prefix, array_to_string(scopes, ','), created_at, last_used_at, revoked_at
            FROM sluice.api_keys ORDER BY id DESC
            """, context: "listing service keys"
        ).map { row throws(PostgresError) in
            Entry(
                id: try row.decode(Int64.self, at: 0), name: try row.decode(String.self, at: 1),
                prefix: try row.decode(String.self, at: 2),
                scopes: try row.decode(String.self, at: 3).split(separator: ",").map(String.init),
                createdAt: try row.decode(Date.self, at: 4), lastUsedAt: try row.decode(Date?.self, at: 5),
                revokedAt: try row.decode(Date?.self, at: 6))
        }
    }

    /// Revokes a key at once; false when there is no live key with that id.
    func revoke(id: Int64) throws(PostgresError) -> Bool {
        !(try connection.query(
            "UPDATE sluice.api_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL RETURNING id", [id],
            context: "revoking service key \(id)"
        ).isEmpty)
    }

    /// The live key a caller presented, if any (an unknown or revoked key is nil).
    func authenticate(_ presented: String) throws(PostgresError) -> Caller? {
        try authenticate(PresentedToken(presented))
    }

    /// The same, for a token whose hash the request already took.
    func authenticate(_ presented: PresentedToken) throws(PostgresError) -> Caller? {
        guard presented.isServiceKey, presented.text.utf8.count <= 100 else { return nil }
        return try connection.query(
            "SELECT id, name, array_to_string(scopes, ',') FROM sluice.authenticate_api_key(decode($1, 'hex'))",
            [Self.hex(Array(presented.digest))], context: "checking a service key"
        ).first.map { row throws(PostgresError) in
            Caller(
                id: try row.decode(Int64.self, at: 0), name: try row.decode(String.self, at: 1),
                scopes: try row.decode(String.self, at: 2).split(separator: ",").map(String.init))
        }
    }

    private static func hex(_ bytes: [UInt8]) -> String {
        bytes.map { String(format: "%02x", $0) }.joined()
    }
}
