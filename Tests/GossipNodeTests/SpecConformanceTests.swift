// SPEC = vectors = daemon: the node's real handlers (a BootstrapNode serving on 127.0.0.1,
// called through RPCClient) answer what Protocol/SPEC.md §4-§5 and Protocol/vectors say.
import Foundation
import GossipML
import GossipNet
@testable import GossipNode
import GossipWire
import Logging
import Testing

/// Protocol/ of this package, found from this file.
let protocolDirectory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().appendingPathComponent("Protocol")

/// The one message in vector file `name` (hex, `#` comment lines), decoded by the node's codec.
func vectorMessage(_ name: String) throws -> (InboundMessage, MessageBody) {
    let text = try String(contentsOf: protocolDirectory.appendingPathComponent("vectors/\(name).hex"), encoding: .utf8)
    var digits: [UInt8] = []
    for line in text.split(separator: "\n") where !line.hasPrefix("#") {
        digits += line.utf8.filter { $0 != 0x20 && $0 != 0x09 && $0 != 0x0d }
    }
    var bytes: [UInt8] = []
    var i = 0
    while i + 1 < digits.count {
        bytes.append(UInt8(String(decoding: digits[i...i + 1], as: UTF8.self), radix: 16)!)
        i += 2
    }
    let decoder = MessageDecoder(limits: .default)
    try decoder.append(bytes)
    let m = try #require(decoder.nextMessage(), "\(name).hex holds no complete message")
    #expect(decoder.nextMessage() == nil, "\(name).hex holds more than one message")
    return (m, try MessageBody.decode(m))
}

/// A bootstrap serving a small model on 127.0.0.1 with a client for it; `stop()` ends both.
struct RunningBootstrap {
    let node: BootstrapNode
    let endpoint: Endpoint
    let client = RPCClient()

    init() throws {
        let arch = try MLPArchitecture(parsing: "4,3,2")
        let config = BootstrapConfig(listen: Endpoint(host: "127.0.0.1", port: 0), architecture: arch,
                                     initialModel: arch.makeParameters(seed: 1))
        node = try BootstrapNode(config: config, logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }))
        endpoint = try node.start()
    }

    func call(_ type: MessageType, _ payload: [UInt8]) -> Result<InboundMessage, RPCError> {
        callSync(client, endpoint, type, ByteSlice(ByteStorage(copying: payload)), deadline: .seconds(20))
    }

    func stop() {
        client.close()
        node.requestStop()
        node.wait()
    }
}

/// `str` as SPEC §5 lays it out: u16 byte length, then the UTF-8 bytes.
func strBytes(_ s: String) -> [UInt8] {
    let u = Array(s.utf8)
    return [UInt8(u.count & 0xff), UInt8(u.count >> 8)] + u
}

/// Polls `condition` until true or `timeout`; records an issue naming `what` on timeout.
func waitUntil(_ what: String, timeout: Duration = .seconds(20), _ condition: () -> Bool) -> Bool {
    let end = ContinuousClock.now + timeout
    while ContinuousClock.now < end {
        if condition() { return true }
        usleep(2_000)
    }
    if condition() { return true }
    Issue.record("timed out after \(timeout) waiting for \(what)")
    return false
}

func u64Bytes(_ v: UInt64) -> [UInt8] { (0..<8).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }

@Suite(.serialized) struct SpecConformanceTests {
    /// SPEC §5.4: Status and Stop requests have an empty payload; trailing bytes are
    /// INVALID_ARGUMENT, and a Stop carrying garbage does not stop the node.
    @Test func statusAndStopWithAPayloadAreRefusedAndChangeNothing() throws {
        let b = try RunningBootstrap()
        defer { b.stop() }
        for type in [MessageType.stop, .status] {
            switch b.call(type, [0xde, 0xad, 0xbe, 0xef]) {
            case .success: Issue.record("\(type.name) with a 4-byte payload was answered OK")
            case .failure(let e):
                #expect(e.remote && e.code == .invalidArgument, "\(e)")
                #expect(e.message.contains("\(type.name) request must have an empty payload, got 4 bytes"), "\(e.message)")
            }
        }
        #expect(b.node.status().phase == "serving", "a Stop with a payload stopped the node")
        let st = try b.call(.status, []).get()
        #expect(try StatusReport.parse(try WireCodec.decodeStatusReply(st.payload).json).phase == "serving")
        // The well-formed Stop does stop it.
        _ = try b.call(.stop, []).get()
        #expect(waitUntil("the node to stop after an empty Stop") { b.node.status().phase == "stopping" })
    }

    /// SPEC §5: a `str` past its limit is RESOURCE_EXHAUSTED; the daemon's reply to a Register
    /// whose endpoint is 300 bytes is exactly `error_resource_exhausted_zlib.hex`'s body.
    @Test func overLongEndpointIsAnsweredAsTheVectorSays() throws {
        let (vm, body) = try vectorMessage("error_resource_exhausted_zlib")
        guard case .error(type: let type, let expected) = body else {
            Issue.record("the vector is not an error reply: \(body)")
            return
        }
        #expect(type == .register && vm.type == .register)
        #expect(expected.code == .resourceExhausted)
        let b = try RunningBootstrap()
        defer { b.stop() }
        let endpoint = String(repeating: "h", count: 295) + ":7001"
        switch b.call(.register, strBytes(endpoint) + u64Bytes(0)) {
        case .success: Issue.record("a 300-byte endpoint was accepted")
        case .failure(let e):
            #expect(e.remote)
            #expect(e.code == expected.code, "daemon answered \(e.code.name), the vector says \(expected.code.name)")
            #expect(e.message == expected.message)
        }
    }

    /// SPEC §5.4: the TriggerGossip reply is what `WireCodec.encodeTriggerGossipReply` makes,
    /// byte for byte the payload of `trigger_gossip_reply.hex`, and reads back to the same value.
    @Test func triggerGossipReplyEncoderMatchesTheVector() throws {
        let (vm, body) = try vectorMessage("trigger_gossip_reply")
        guard case .triggerGossipReply = body else {
            Issue.record("the vector is not a TriggerGossip reply: \(body)")
            return
        }
        let result = TriggerGossipResult(peer: "127.0.0.1:7002", relativeL2Change: 0.0123)
        let encoded = try WireCodec.encodeTriggerGossipReply(result)
        #expect(Array(encoded.withUnsafeBytes { Array($0) }) == Array(vm.payload.withUnsafeBytes { Array($0) }))
        #expect(try WireCodec.decodeTriggerGossipReply(vm.payload) == result)
        #expect(try result.json() == #"{"peer":"127.0.0.1:7002","relative_l2_change":0.0123}"#)
    }

    @Test func triggerGossipResultRefusesWhatIsNotAReport() throws {
        #expect(throws: WireError.self) { _ = try TriggerGossipResult(peer: "a:1", relativeL2Change: .nan).json() }
        #expect(throws: WireError.self) { _ = try TriggerGossipResult(peer: "a:1", relativeL2Change: -1).json() }
        #expect(throws: NodeError.self) { _ = try TriggerGossipResult(json: #"{"peer":"a:1"}"#) }
        #expect(throws: NodeError.self) { _ = try TriggerGossipResult(json: #"[1]"#) }
        // Strings are escaped; the text parses back.
        let odd = TriggerGossipResult(peer: "q\"b\\\n", relativeL2Change: 1e-5)
        #expect(try TriggerGossipResult(json: try odd.json()) == odd)
    }
}
