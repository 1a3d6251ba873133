// The transport's error replies use exactly the spec's layout (SPEC.md §8), so a peer written
// from the spec reads them: checked against GossipWire's ErrorReply both ways.
@testable import GossipNet
import GossipWire
import Testing

@Test func transportErrorRepliesFollowTheSpec() throws {
    let payload = RPCErrorPayload.encode(.aborted, "peer 127.0.0.1:1 is busy; try another peer")
    let decoded = try ErrorReply.decode(payload)
    #expect(decoded == ErrorReply(code: .aborted, message: "peer 127.0.0.1:1 is busy; try another peer"))
    let spec = try ErrorReply(code: .failedPrecondition, message: "schema differs").encode()
    #expect(try RPCErrorPayload.decode(spec) == RPCError(.failedPrecondition, "schema differs"))
    #expect(payload.array == (try ErrorReply(code: .aborted, message: "peer 127.0.0.1:1 is busy; try another peer").encode().array))
}

@Test func overlongErrorTextIsCutAtACharacterBoundary() throws {
    let long = String(repeating: "é", count: 40_000)   // 80,000 UTF-8 bytes
    let decoded = try ErrorReply.decode(RPCErrorPayload.encode(.internal, long))
    #expect(decoded.message.utf8.count <= Limits.default.maxTextBytes)
    #expect(decoded.message.allSatisfy { $0 == "é" })
}
