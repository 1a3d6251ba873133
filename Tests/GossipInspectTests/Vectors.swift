// The golden vectors (Protocol/vectors/*.hex) as the inspector tests use them: the frames of
// a named vector, and the model that the vectors carry. GossipWireTests checks that these
// files are byte for byte what the codec encodes; here they are input only.
import Foundation
import GossipInspect
import GossipWire

enum Vectors {
    static var directory: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Protocol/vectors")
    }

    /// The frames of vector `name` (`#` comment lines dropped, whitespace ignored).
    static func bytes(_ name: String) throws -> [UInt8] {
        let text = try String(contentsOf: directory.appendingPathComponent(name + ".hex"), encoding: .utf8)
        let hex = text.split(separator: "\n").filter { !$0.hasPrefix("#") }.joined().filter { !$0.isWhitespace }
        let digits = Array(hex.utf8)
        guard digits.count % 2 == 0 else { throw VectorError("\(name).hex has an odd number of hex digits") }
        func nibble(_ c: UInt8) throws -> UInt8 {
            switch c {
            case 0x30...0x39: return c - 0x30
            case 0x61...0x66: return c - 0x61 + 10
            case 0x41...0x46: return c - 0x41 + 10
            default: throw VectorError("\(name).hex has a non-hex character \(UnicodeScalar(c))")
            }
        }
        return try stride(from: 0, to: digits.count, by: 2).map { try nibble(digits[$0]) << 4 | nibble(digits[$0 + 1]) }
    }

    /// The model of `getmodel_reply` (layers.0.weight [2,3], layers.0.bias [2], round 3).
    static func model() throws -> ModelState {
        let (records, error) = FrameDump.decode(try bytes("getmodel_reply"))
        guard error == nil, case .success(.getModelReply(let m))? = records.last?.body else {
            throw VectorError("getmodel_reply.hex does not decode to a GetModel reply: \(String(describing: error))")
        }
        return m
    }

    struct VectorError: Error, CustomStringConvertible {
        var description: String
        init(_ d: String) { description = d }
    }
}
