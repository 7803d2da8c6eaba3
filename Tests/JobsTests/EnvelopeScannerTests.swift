import Foundation
import TestKit
import Testing

@testable import Jobs

/// The receiver's one-pass JSON check, against Foundation's parser as the reference.
@Suite("envelope scanner")
struct EnvelopeScannerTests {
    static func fixtures() throws -> [[UInt8]] {
        let events = try FileManager.default.contentsOfDirectory(
            atPath: Repository.url("Tests/Fixtures/stripe/events").path
        ).sorted()
        return try events.map { try Repository.fixture("stripe/events/\($0)") }
            + ["user_created.json", "user_deleted.json", "user_updated.json"].map {
                try Repository.fixture("clerk/\($0)")
            }
    }

    /// Foundation's reading of the body: nil unless it is a JSON object.
    static func reference(_ body: [UInt8]) -> [String: Any]? {
        (try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any]
    }

    static func field(_ value: Any?) -> EnvelopeScanner.Field {
        switch value {
        case nil: .absent
        case let string as String: .string(string)
        default: .notString
        }
    }

    @Test("every fixture scans, and id and type are what Foundation reads")
    func fixturesAgree() throws {
        for body in try Self.fixtures() {
            let reference = try #require(Self.reference(body))
            let fields = try #require(EnvelopeScanner.scan(body))
            #expect(fields.id == Self.field(reference["id"]))
            #expect(fields.type == Self.field(reference["type"]))
        }
    }

    @Test(
        "what is not one JSON object is refused",
        arguments: [
            "", " ", "[]", "\"event\"", "42", "null", "{", "}", "{}}", "{} {}", "{},", #"{"a":1,}"#, #"{"a" 1}"#,
            #"{"a":}"#, #"{a:1}"#, #"{'a':1}"#, #"{"a":01}"#, #"{"a":1.}"#, #"{"a":.5}"#, #"{"a":-}"#,
            #"{"a":1e}"#, #"{"a":+1}"#, #"{"a":tru}"#, #"{"a":nul}"#, #"{"a":True}"#, #"{"a":[1,]}"#,
            #"{"a":[1 2]}"#, "{\"a\":\"tab\there\"}", #"{"a":"\x"}"#, #"{"a":"\u12"}"#, #"{"a":"\u12G4"}"#,
            #"{"a":"unterminated}"#, #"{"a":"\ud800"}"#, #"{"a":"\udc00\ud800"}"#, #"{"a":"\ud800\u0041"}"#,
            "{\"a\":1}\u{0}", #"{"type":"a","type":"b"}"#, #"{"id":"a","x":{},"id":"b"}"#,
            // Spelled with escapes, `type` and `id` are still those keys to every other reader.
            #"{"typ\u0065":"customer.subscription.deleted","type":"invoice.paid"}"#, #"{"\u0069d":"evt_A"}"#,
        ])
    func refused(_ text: String) {
        #expect(EnvelopeScanner.scan(Array(text.utf8)) == nil)
    }

    @Test("values are read as written: escapes decoded, other kinds told apart, nested keys ignored")
    func values() throws {
        let escaped = try #require(
            EnvelopeScanner.scan(Array(#" {"type":"a\"b\\c\/d\u0041\n\ud83d\ude00","id":"evt_1"} "#.utf8)))
        #expect(escaped.type == .string("a\"b\\c/dA\n😀") && escaped.id == .string("evt_1"))
        let kinds = try #require(EnvelopeScanner.scan(Array(#"{"id":7,"type":null}"#.utf8)))
        #expect(kinds.id == .notString && kinds.type == .notString)
        let nested = try #require(
            EnvelopeScanner.scan(Array(#"{"data":{"id":"cus_1","type":"x"},"list":[{"type":"y"}]}"#.utf8)))
        #expect(nested.id == .absent && nested.type == .absent)
        let numbers = EnvelopeScanner.scan(Array(#"{"a":[0,-0,1.5,-2e10,3E+2,4e-1,true,false,null,"",{}]}"#.utf8))
        #expect(numbers == EnvelopeScanner.Fields())
    }

    @Test("nesting is refused past 512 containers, as Foundation's decoder does")
    func depth() {
        func nested(_ depth: Int) -> [UInt8] {
            Array(
                ("{\"a\":" + String(repeating: "[", count: depth - 1) + String(repeating: "]", count: depth - 1) + "}")
                    .utf8)
        }
        #expect(EnvelopeScanner.scan(nested(EnvelopeScanner.maxDepth)) != nil)
        #expect(EnvelopeScanner.scan(nested(EnvelopeScanner.maxDepth + 1)) == nil)
        #expect(EnvelopeScanner.scan(nested(100_000)) == nil)
    }

    /// Where Foundation's reader departs from RFC 8259: it takes a trailing comma (`[1,]`), and refuses a
    /// number beyond a Double's range (`1E400`). Mutated bodies with either are left out of the comparison.
    static let foundationQuirks = try! NSRegularExpression(pattern: #",\s*[\]}]|[0-9][eE][+-]?[0-9]{3,}"#)

    @Test("20,000 mutated fixtures: accepted exactly when Foundation reads a JSON object, with the same id and type")
    func mutations() throws {
        var random = SeededGenerator(seed: 0x5ca7_7e12)
        let alphabet = Array(#"{}[]:,"\ 0123456789-+.eEtrufalsn/bu"#.utf8) + [0x09, 0x0A, 0x01, 0xC3, 0xA9]
        let fixtures = try Self.fixtures()
        var disagreements: [String] = []
        for round in 0..<20_000 {
            var body = fixtures[round % fixtures.count]
            for _ in 0..<Int.random(in: 1...3, using: &random) {
                let position = Int.random(in: 0..<body.count, using: &random)
                switch Int.random(in: 0..<3, using: &random) {
                case 0: body.remove(at: position)
                case 1: body.insert(alphabet.randomElement(using: &random)!, at: position)
                default: body[position] = alphabet.randomElement(using: &random)!
                }
            }
            let text = String(decoding: body, as: UTF8.self)
            if Self.foundationQuirks.firstMatch(in: text, range: NSRange(text.startIndex..., in: text)) != nil {
                continue
            }
            let reference = Self.reference(body)
            let fields = EnvelopeScanner.scan(body)
            let agrees =
                if let reference, let fields {
                    fields.id == Self.field(reference["id"]) && fields.type == Self.field(reference["type"])
                } else {
                    // Foundation takes invalid UTF-8 the receiver refuses before the scan: only valid text counts.
                    (reference == nil) == (fields == nil) || String(validating: body, as: UTF8.self) == nil
                }
            if !agrees, disagreements.count < 5 {
                disagreements.append(text)
            }
        }
        #expect(disagreements.isEmpty, "the scanner and Foundation disagree on: \(disagreements)")
    }
}
