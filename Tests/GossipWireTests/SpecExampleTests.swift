// Protocol/SPEC.md and Protocol/vectors cannot drift apart: every ```hex block of the SPEC is
// the bytes of the vector file it names (SPEC §5 says how such a block is written), and
// every vector file the SPEC mentions exists.
import Foundation
import Testing
import GossipWire

/// The ```hex blocks of the SPEC, parsed by the rules SPEC §5 states.
enum SpecExamples {
    struct Block {
        /// Vector file name without `.hex`.
        let vector: String
        let bytes: [UInt8]
        /// The block ends in `...`: it shows a prefix of the vector.
        let elided: Bool
        /// 1-based line of the opening fence, for messages.
        let line: Int
    }

    struct ParseError: Error, CustomStringConvertible {
        let description: String
    }

    static var specURL: URL { HexFile.vectorsDirectory.deletingLastPathComponent().appendingPathComponent("SPEC.md") }

    static func blocks(in text: String) throws -> [Block] {
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        var out: [Block] = []
        var i = 0
        while i < lines.count {
            guard lines[i].trimmingCharacters(in: .whitespaces) == "```hex" else { i += 1; continue }
            let fence = i + 1
            i += 1
            guard i < lines.count, let name = lines[i].split(separator: " ").first, name.hasSuffix(".hex") else {
                throw ParseError(description: "SPEC.md line \(fence): a hex block must name its vector file (NAME.hex) on its first line")
            }
            var bytes: [UInt8] = []
            var elided = false
            i += 1
            while i < lines.count, lines[i].trimmingCharacters(in: .whitespaces) != "```" {
                do {
                    let (b, e) = try parseLine(lines[i])
                    guard !elided || (b.isEmpty && !e) else {
                        throw ParseError(description: "bytes after '...' in the block of \(name)")
                    }
                    bytes += b
                    elided = elided || e
                } catch let e as ParseError {
                    throw ParseError(description: "SPEC.md line \(i + 1): \(e.description)")
                }
                i += 1
            }
            guard i < lines.count else { throw ParseError(description: "SPEC.md line \(fence): unclosed hex block") }
            out.append(Block(vector: String(name.dropLast(4)), bytes: bytes, elided: elided, line: fence))
            i += 1
        }
        return out
    }

    /// The bytes a line shows, and whether it ends in `...`.
    static func parseLine(_ line: Substring) throws -> ([UInt8], Bool) {
        let c = Array(line)
        var bytes: [UInt8] = []
        var i = 0
        var tokens = 0
        func isHex(_ ch: Character) -> Bool { ch.isHexDigit && ch.isASCII }
        while i < c.count {
            var spaces = 0
            while i < c.count, c[i] == " " || c[i] == "\t" { spaces += 1; i += 1 }
            if i == c.count || (tokens > 0 && spaces >= 3) { break }
            if c[i] == "\"" {
                guard let close = c[(i + 1)...].firstIndex(of: "\"") else { throw ParseError(description: "unclosed \"") }
                bytes += Array(String(c[(i + 1)..<close]).utf8)
                i = close + 1
            } else if c[i] == "{" {
                guard let close = c.lastIndex(of: "}"), close > i else { throw ParseError(description: "unclosed {") }
                bytes += Array(String(c[i...close]).utf8)
                i = close + 1
            } else if c[i] == "×" {
                i += 1
                while i < c.count, c[i] == " " { i += 1 }
                var n = 0
                var digits = 0
                while i < c.count, let d = c[i].wholeNumberValue, c[i].isASCII { n = n * 10 + d; digits += 1; i += 1 }
                guard digits > 0, n >= 1, let last = bytes.last else {
                    throw ParseError(description: "'×' needs a byte before it and a count after it")
                }
                bytes += [UInt8](repeating: last, count: n - 1)
            } else if c.count - i >= 3, c[i] == ".", c[i + 1] == ".", c[i + 2] == "." {
                return (bytes, true)
            } else if c.count - i >= 2, isHex(c[i]), isHex(c[i + 1]), c.count - i == 2 || c[i + 2] == " " || c[i + 2] == "\t" {
                bytes.append(UInt8(String(c[i...(i + 1)]), radix: 16)!)
                i += 2
            } else {
                break  // a comment
            }
            tokens += 1
        }
        return (bytes, false)
    }
}

@Suite struct SpecExampleTests {
    @Test func everyHexBlockIsItsVectorsBytes() throws {
        let blocks = try SpecExamples.blocks(in: String(contentsOf: SpecExamples.specURL, encoding: .utf8))
        // The SPEC shows at least the examples of §5 (a parser that finds none must fail).
        #expect(blocks.count >= 14, "found only \(blocks.count) hex blocks in SPEC.md")
        for b in blocks {
            let url = HexFile.vectorsDirectory.appendingPathComponent(b.vector + ".hex")
            guard let text = try? String(contentsOf: url, encoding: .utf8) else {
                Issue.record("SPEC.md line \(b.line): \(b.vector).hex does not exist in Protocol/vectors")
                continue
            }
            let file = try HexFile.parse(text)
            #expect(!b.bytes.isEmpty, "SPEC.md line \(b.line): the block of \(b.vector).hex shows no bytes")
            let firstDifference = zip(b.bytes, file).enumerated().first { $0.element.0 != $0.element.1 }?.offset
            if b.elided {
                let isPrefix = b.bytes.count < file.count && firstDifference == nil
                #expect(isPrefix, "SPEC.md line \(b.line): the bytes shown are not the start of \(b.vector).hex (first difference at byte \(firstDifference ?? b.bytes.count))")
            } else {
                let same = b.bytes == file
                #expect(same, "SPEC.md line \(b.line): the block differs from \(b.vector).hex: \(b.bytes.count) bytes shown, the file has \(file.count), first difference at byte \(firstDifference ?? min(b.bytes.count, file.count))")
            }
        }
    }

    @Test func everyVectorTheSpecNamesExists() throws {
        let text = try String(contentsOf: SpecExamples.specURL, encoding: .utf8)
        let files = Set(try FileManager.default.contentsOfDirectory(atPath: HexFile.vectorsDirectory.path))
        let regex = try NSRegularExpression(pattern: "[A-Za-z0-9_]+\\.hex\\b")
        let ns = text as NSString
        let named = Set(regex.matches(in: text, range: NSRange(location: 0, length: ns.length)).map { ns.substring(with: $0.range) })
        #expect(named.count >= 10)
        for n in named.sorted() {
            #expect(files.contains(n), "SPEC.md names \(n), which is not in Protocol/vectors")
        }
    }

    /// SPEC §8's status table has one row per code this version defines, named as
    /// `StatusCode.name` says, and the codes version 2 uses (7, 16, 17) say what for.
    @Test func statusTableListsEveryCode() throws {
        let text = try String(contentsOf: SpecExamples.specURL, encoding: .utf8)
        var rows: [UInt32: (name: String, usedFor: String)] = [:]
        for line in text.split(separator: "\n") where line.hasPrefix("| ") {
            let cells = line.split(separator: "|", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
            guard cells.count >= 5, let n = UInt32(cells[1]), cells[2].allSatisfy({ $0.isUppercase || $0 == "_" }) else { continue }
            rows[n] = (cells[2], cells[3])
        }
        for code in StatusCode.allCases {
            #expect(rows[code.rawValue]?.name == code.name, "SPEC §8 has no row \(code.rawValue) \(code.name)")
        }
        #expect(StatusCode(wireValue: 17) == .modelRejected && StatusCode.modelRejected.name == "MODEL_REJECTED")
        #expect(StatusCode(wireValue: 18) == .unknown)
        for code in [StatusCode.permissionDenied, .unauthenticated, .modelRejected] {
            let usedFor = rows[code.rawValue]?.usedFor ?? ""
            #expect(usedFor.count > 20, "SPEC §8 must say what \(code.name) is used for, found '\(usedFor)'")
        }
    }

    @Test func theBlockParserReadsEachNotation() throws {
        #expect(try SpecExamples.parseLine("0e 00 \"ab\" 01 × 3   comment 00") == ([0x0e, 0x00, 0x61, 0x62, 0x01, 0x01, 0x01], false))
        #expect(try SpecExamples.parseLine("23 00 00 00 {\"a\":1}") == ([0x23, 0, 0, 0] + Array("{\"a\":1}".utf8), false))
        #expect(try SpecExamples.parseLine("ff 12 ...  rest") == ([0xff, 0x12], true))
        #expect(try SpecExamples.parseLine("len=48  v1") == ([], false))
        #expect(try SpecExamples.parseLine("0a 00 00 00   code 10 ABORTED") == ([0x0a, 0, 0, 0], false))
        #expect(throws: SpecExamples.ParseError.self) { _ = try SpecExamples.parseLine("00 \"open") }
    }
}
