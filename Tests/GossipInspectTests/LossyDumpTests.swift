// framedump shows the lossy golden vectors (SPEC §6.5): each tensor with its dtype and its
// values summarised after dequantization.
import Foundation
import Testing
import GossipInspect
import GossipWire

@Test(arguments: [("bf16", "BF16", "min=-1.25 max=3.5"), ("fp16", "F16", "min=-1.25 max=3.5"), ("int8", "I8", "min=-1.2401575 max=3.5")])
func framedumpShowsLossyTensors(_ file: String, _ dtype: String, _ summary: String) throws {
    let path = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Protocol/vectors/gossip_exchange_request_\(file).hex")
    let text = try String(contentsOf: path, encoding: .utf8)
    let hex = text.split(separator: "\n").filter { !$0.hasPrefix("#") }.joined().filter { !$0.isWhitespace }
    var bytes: [UInt8] = []
    var i = hex.startIndex
    while i < hex.endIndex {
        let j = hex.index(i, offsetBy: 2)
        bytes.append(UInt8(hex[i..<j], radix: 16)!)
        i = j
    }
    let (records, error) = FrameDump.decode(bytes)
    #expect(error == nil && records.count == 1)
    let tree = FrameDump.render(records[0], verbose: true, hex: false, json: false)
    #expect(tree.contains("tensor layers.0.weight: \(dtype) [2, 3] \(summary)"), "\(tree)")
}
