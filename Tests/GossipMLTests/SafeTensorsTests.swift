// Tests of safetensors: golden header bytes, round trips, and every malformed-file case.

import Foundation
import Testing
@testable import GossipML

@Suite struct SafeTensorsTests {
    static func headerLength(_ b: [UInt8]) -> Int {
        (0..<8).reduce(0) { $0 | Int(b[$1]) << (8 * $1) }
    }

    /// Builds a file from a raw header string and data bytes (no padding added).
    static func file(_ header: String, data: [UInt8]) -> [UInt8] {
        let h = Array(header.utf8)
        var out = (0..<8).map { UInt8((h.count >> (8 * $0)) & 0xff) }
        out += h
        out += data
        return out
    }

    @Test func goldenHeaderLengthsMatchReference() throws {
        let p = ParameterSet(specs: [("attn.0", [1, 2, 3])])
        let bytes = try SafeTensors.encode(p, metadata: [:])
        #expect(Self.headerLength(bytes) == 64)
        let header = String(decoding: bytes[8..<72], as: UTF8.self)
        #expect(header == #"{"attn.0":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]}}"#)  // exactly 64 bytes, no padding needed
        #expect(bytes.count == 8 + 64 + 24)

        let p4 = ParameterSet(specs: [("attn0", [1, 1, 2, 3])])
        let b4 = try SafeTensors.encode(p4, metadata: [:])
        #expect(Self.headerLength(b4) == 72)
        let h4 = String(decoding: b4[8..<80], as: UTF8.self)
        #expect(h4 == #"{"attn0":{"dtype":"F32","shape":[1,1,2,3],"data_offsets":[0,24]}}"# + "       ")  // 65 bytes + 7 spaces
    }

    @Test func metadataFirstAndTensorsSortedByName() throws {
        let p = ParameterSet(specs: [("b", [1]), ("a", [2])])
        let bytes = try SafeTensors.encode(p, metadata: ["z": "1", "arch": "x\"y"])
        let n = Self.headerLength(bytes)
        #expect(n % 8 == 0)
        let header = String(decoding: bytes[8..<(8 + n)], as: UTF8.self).trimmingCharacters(in: .whitespaces)
        #expect(header == #"{"__metadata__":{"arch":"x\"y","z":"1"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}"#)
    }

    @Test func roundTripRestoresMLPOrderAndValues() throws {
        let arch = try MLPArchitecture(layerSizes: [3, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2])  // layers.10 and .11 sort before .2
        let p = arch.makeParameters(seed: 4)
        let meta = ["arch": arch.description, "activation": "relu"]
        let (q, m) = try SafeTensors.decode(try SafeTensors.encode(p, metadata: meta))
        #expect(q == p)
        #expect(q.schemaHash == p.schemaHash)
        #expect(m == meta)

        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("gossip-st-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("m.safetensors").path
        try SafeTensors.write(p, metadata: meta, to: path)
        let (r, rm) = try SafeTensors.read(path: path)
        #expect(r == p && rm == meta)
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path) == ["m.safetensors"])
        #expect(throws: MLError.self) { try SafeTensors.write(p, metadata: [:], to: dir.path + "/missing/x.safetensors") }
    }

    @Test func emptyAndZeroSizedTensors() throws {
        let p = ParameterSet(specs: [("e", [0, 3]), ("s", [])])
        let (q, _) = try SafeTensors.decode(try SafeTensors.encode(p, metadata: [:]))
        #expect(q.specs.map(\.name).sorted() == ["e", "s"])
        #expect(q.parameterCount == 1)
    }

    static let t24 = [UInt8](repeating: 0, count: 24)

    @Test(arguments: [
        ("too small", [UInt8](repeating: 0, count: 7)),
        ("header too large", [0x00, 0xe1, 0xf5, 0x05, 0x01, 0, 0, 0] + [UInt8](repeating: 0x20, count: 16)),  // 100,000,001 + ...
        ("header beyond file", file(#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#, data: []).dropLast(3) + []),
        ("invalid utf8", file("{\u{1}}", data: []).enumerated().map { $0.offset == 9 ? 0xff : $0.element }),
        ("invalid json", file(#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}"#, data: [0, 0, 0, 0])),
        ("not an object", file("[1,2]   ", data: [])),
        ("overlap", file(#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#, data: [UInt8](repeating: 0, count: 12))),
        ("gap", file(#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}"#, data: [UInt8](repeating: 0, count: 12))),
        ("not starting at zero", file(#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#, data: [UInt8](repeating: 0, count: 8))),
        ("trailing bytes", file(#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#, data: [UInt8](repeating: 0, count: 5))),
        ("data short", file(#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#, data: [UInt8](repeating: 0, count: 4))),
        ("shape mismatch", file(#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#, data: [UInt8](repeating: 0, count: 8))),
        ("end before begin", file(#"{"a":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}}"#, data: [UInt8](repeating: 0, count: 4))),
        ("non-F32 dtype", file(#"{"a":{"dtype":"F16","shape":[2],"data_offsets":[0,4]}}"#, data: [UInt8](repeating: 0, count: 4))),
        ("unknown dtype", file(#"{"a":{"dtype":"Q7","shape":[1],"data_offsets":[0,4]}}"#, data: [UInt8](repeating: 0, count: 4))),
        ("missing offsets", file(#"{"a":{"dtype":"F32","shape":[1]}}"#, data: [UInt8](repeating: 0, count: 4))),
        ("negative shape", file(#"{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}"#, data: [UInt8](repeating: 0, count: 4))),
        ("fractional offset", file(#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4.5]}}"#, data: [UInt8](repeating: 0, count: 4))),
        ("metadata not strings", file(#"{"__metadata__":{"k":1},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#, data: [UInt8](repeating: 0, count: 4))),
        ("shape overflow", file(#"{"a":{"dtype":"F32","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,4]}}"#, data: [UInt8](repeating: 0, count: 4))),
    ] as [(String, [UInt8])])
    func malformedFilesAreRejected(_ name: String, _ bytes: [UInt8]) {
        #expect(throws: MLError.self, "\(name)") { try SafeTensors.decode(bytes) }
        do {
            _ = try SafeTensors.decode(bytes)
        } catch let e as MLError {
            #expect(e.kind == .invalidSafeTensors)
            #expect(!e.message.isEmpty)
        } catch {
            Issue.record("unexpected error type \(error)")
        }
    }

    /// Hostile headers (defect 5 of issue 8): each is refused with `invalidSafeTensors` and a
    /// message naming the tensor, never a trap. Before the fix, a shape whose element count fits
    /// in Int but whose byte count (x4) does not trapped while formatting the error message.
    @Test(arguments: [
        ("dim 2^62 (bytes overflow)", #"{"a":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,4]}}"#),
        ("dims 2^61 x 2 (bytes overflow)", #"{"a":{"dtype":"F32","shape":[2305843009213693952,2],"data_offsets":[0,4]}}"#),
        ("dim Int.max/4+1", #"{"a":{"dtype":"F32","shape":[2305843009213693952],"data_offsets":[0,4]}}"#),
        ("dims product overflow", #"{"a":{"dtype":"F32","shape":[3037000500,3037000500,4],"data_offsets":[0,4]}}"#),
        ("dim 2^63", #"{"a":{"dtype":"F32","shape":[9223372036854775808],"data_offsets":[0,4]}}"#),
        ("dim 1e30", #"{"a":{"dtype":"F32","shape":[1e30],"data_offsets":[0,4]}}"#),
        ("negative dim", #"{"a":{"dtype":"F32","shape":[2,-2],"data_offsets":[0,4]}}"#),
        ("huge dims with a zero dim", #"{"a":{"dtype":"F32","shape":[4294967296,4294967296,0],"data_offsets":[0,4]}}"#),
        ("end far past the file", #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,9223372036854775807]}}"#),
        ("both offsets past the file", #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#),
        ("huge end with huge shape", #"{"a":{"dtype":"F32","shape":[1152921504606846976],"data_offsets":[0,4611686018427387904]}}"#),
        ("overlapping second tensor", #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#),
        ("negative offset", #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}}"#),
        ("three offsets", #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}}"#),
        ("shape not an array", #"{"a":{"dtype":"F32","shape":4,"data_offsets":[0,4]}}"#),
        ("shape of strings", #"{"a":{"dtype":"F32","shape":["1"],"data_offsets":[0,4]}}"#),
    ] as [(String, String)])
    func hostileHeadersAreRefusedCleanly(_ name: String, _ header: String) {
        do {
            _ = try SafeTensors.decode(Self.file(header, data: [0, 0, 0, 0]))
            Issue.record("\(name): decoded, expected a refusal")
        } catch let e as MLError {
            #expect(e.kind == .invalidSafeTensors, "\(name)")
            #expect(e.message.contains("'a'") || e.message.contains("'b'"), "\(name): message should name the tensor: \(e.message)")
        } catch {
            Issue.record("\(name): unexpected error type \(error)")
        }
    }

    /// The same hostile file read from disk (the `--model` and checkpoint path) is refused too.
    @Test func hostileFileOnDiskIsRefused() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("gossip-st-hostile-\(getpid()).safetensors").path
        defer { unlink(path) }
        let bytes = Self.file(#"{"a":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,4]}}"#, data: [0, 0, 0, 0])
        #expect(FileManager.default.createFile(atPath: path, contents: Data(bytes)))
        #expect(throws: MLError.self) { try SafeTensors.read(path: path) }
    }

    @Test func validHandWrittenFileDecodes() throws {
        var data = [UInt8]()
        for v in [Float(1.5), -2] { withUnsafeBytes(of: v.bitPattern.littleEndian) { data += $0 } }
        let (p, m) = try SafeTensors.decode(Self.file(#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}  "#, data: data))
        #expect(p.storage == [1.5, -2])
        #expect(m.isEmpty)
    }
}
