// Per-message-type size limits (issue 8, defect 1): a header's declared sizes are checked
// against the limit of its type before anything is allocated; a Ping is small; a compressed
// payload is bounded by its chunk; the control limit holds the largest control message the
// other limits allow.
import Testing
@testable import GossipWire

@Suite struct MessageLimitTests {
    private func header(type: MessageType, flags: FrameFlags, chunk: UInt32, message: UInt32, payload: Int) -> [UInt8] {
        FrameHeader(frameLength: UInt32(FrameHeader.size + payload), flags: flags, type: type, requestID: 9,
                    chunkRawLength: chunk, messageRawLength: message, checksum: 0).bytes
    }

    /// Feeds `bytes` to a decoder with its own budget; returns the error and what was charged.
    private func refusal(_ bytes: [UInt8], limits: Limits = .default) -> (WireError?, charged: Int) {
        let buffers = ReceiveBuffers(budget: 1 << 40)
        let d = MessageDecoder(limits: limits, buffers: buffers)
        do { try d.append(bytes) } catch { return (error, buffers.peakChargedBytes) }
        return (nil, buffers.peakChargedBytes)
    }

    @Test func perTypeLimits() {
        let l = Limits.default
        #expect(l.maxMessageBytes(for: .gossipExchange, kind: .request) == l.maxMessageBytes)
        #expect(l.maxMessageBytes(for: .gossipExchange, kind: .response) == l.maxMessageBytes)
        #expect(l.maxMessageBytes(for: .getModel, kind: .response) == l.maxMessageBytes)
        // A PushSum request carries a model (SPEC §5.5, §11): a model over 512 KiB (MNIST's
        // 784,256,128,10 is 940 KB) must fit; its empty reply is a control message.
        #expect(l.maxMessageBytes(for: .pushSum, kind: .request) == l.maxMessageBytes)
        #expect(l.maxMessageBytes(for: .pushSum, kind: .response) == l.maxControlMessageBytes)
        #expect(l.maxMessageBytes(for: .getModel, kind: .request) == l.maxControlMessageBytes)
        #expect(l.maxMessageBytes(for: .gossipExchange, kind: .error) == l.maxControlMessageBytes)
        #expect(l.maxMessageBytes(for: .ping, kind: .request) == 64 << 10)
        #expect(l.maxMessageBytes(for: .ping, kind: .response) == 64 << 10)
        #expect(l.maxMessageBytes(for: .register, kind: .response) == 512 << 10)
        #expect(l.maxMessageBytes(for: MessageType(rawValue: 999), kind: .request) == l.maxControlMessageBytes)
        let fitted = l.fittingModel(payloadBytes: 200_000)
        #expect(fitted.maxMessageBytes == 200_000 + l.maxControlMessageBytes)
        #expect(fitted.maxMessageBytes(for: .status, kind: .response) == l.maxControlMessageBytes)
        // Never raised past the current bound.
        #expect(l.fittingModel(payloadBytes: 4 << 30).maxMessageBytes == l.maxMessageBytes)
    }

    @Test func oversizedPingIsRefusedAtItsHeader() {
        // A 1 MB compressed Ping that declares 1 GiB: refused after 24 bytes, nothing charged.
        let (e, charged) = refusal(header(type: .ping, flags: [.compressed, .endStream], chunk: 1 << 30,
                                          message: 1 << 30, payload: 1 << 20))
        #expect(e?.kind == .messageTooLarge)
        #expect(e?.statusCode == .resourceExhausted)
        #expect(e?.offset == 16)
        #expect(e?.message.contains("maxPingBytes") == true)
        #expect(charged == 0)
        // One byte over the Ping limit, uncompressed: refused too; at the limit: accepted.
        let over = 64 << 10 + 1
        #expect(refusal(header(type: .ping, flags: .endStream, chunk: UInt32(over), message: UInt32(over), payload: over)).0?.kind == .messageTooLarge)
        let at = 64 << 10
        #expect(refusal(header(type: .ping, flags: .endStream, chunk: UInt32(at), message: UInt32(at), payload: at)).0 == nil)
    }

    @Test func controlAndModelMessagesHaveTheirOwnBounds() {
        let limits = Limits.default.fittingModel(payloadBytes: 1 << 20)
        let control = UInt32(limits.maxControlMessageBytes + 1)
        for type in [MessageType.register, .status, .stop, .triggerGossip, .getModel, MessageType(rawValue: 77)] {
            let (e, charged) = refusal(header(type: type, flags: .endStream, chunk: 0, message: control, payload: 0), limits: limits)
            #expect(e?.kind == .messageTooLarge, "\(type)")
            #expect(charged == 0)
        }
        // A model message up to the model limit passes the header check; one byte more does not.
        let model = UInt32(limits.maxMessageBytes)
        #expect(refusal(header(type: .gossipExchange, flags: [], chunk: 0, message: model, payload: 0), limits: limits).0 == nil)
        let (e, charged) = refusal(header(type: .gossipExchange, flags: [], chunk: 0, message: model + 1, payload: 0), limits: limits)
        #expect(e?.kind == .messageTooLarge)
        #expect(charged == 0)
        // A GetModel *reply* is a model message; an error reply of any type is a control one.
        #expect(refusal(header(type: .getModel, flags: .response, chunk: 0, message: model, payload: 0), limits: limits).0 == nil)
        #expect(refusal(header(type: .getModel, flags: [.response, .error], chunk: 0, message: control, payload: 0), limits: limits).0?.kind == .messageTooLarge)
    }

    @Test func compressedPayloadIsBoundedByItsChunk() {
        // 4 KiB that inflate to 16 bytes: no deflater needs that much; refused before buffering.
        let (e, charged) = refusal(header(type: .status, flags: [.compressed, .endStream], chunk: 16, message: 16, payload: 4096))
        #expect(e?.kind == .frameTooLarge)
        #expect(e?.statusCode == .resourceExhausted)
        #expect(charged == 0)
        #expect(Compression.maxDeflatedSize(0) == 64)
        #expect(Compression.maxDeflatedSize(8 << 20) == (8 << 20) + (1 << 20) + 64)
    }

    @Test func compressedFrameNeverInflatesPastItsDeclaredSize() throws {
        // A real zlib stream of 64 KiB of zeros, declared as 1 KiB: refused as a bomb.
        let zeros = ByteStorage(count: 64 << 10, zeroed: true)
        let z = try Compression.deflate(zeros.bytes, level: 9, shuffle: false)
        var h = FrameHeader(frameLength: UInt32(FrameHeader.size + z.count), flags: [.compressed, .endStream], type: .status,
                            requestID: 1, chunkRawLength: 1024, messageRawLength: 1024, checksum: 0)
        let (e, _) = refusal(h.bytes + z.array)
        #expect(e?.kind == .decompressionOverflow)
        #expect(e?.statusCode == .resourceExhausted)
        // A truncated stream (the last 8 bytes cut) is INVALID_ARGUMENT (SPEC §7).
        let cut = Array(z.array.dropLast(8))
        h = FrameHeader(frameLength: UInt32(FrameHeader.size + cut.count), flags: [.compressed, .endStream], type: .status,
                        requestID: 1, chunkRawLength: UInt32(64 << 10), messageRawLength: UInt32(64 << 10), checksum: 0)
        let (t, _) = refusal(h.bytes + cut)
        #expect(t?.statusCode == .invalidArgument)
        #expect(t?.kind == .lengthMismatch)
    }

    @Test func controlLimitHoldsTheLargestControlMessage() throws {
        let l = Limits.default
        let name = String(repeating: "h", count: l.maxNameBytes - 6) + ":65535"
        // Every entry at the name limit with a known identity: 4 + 1024 x (2 + 256 + 32) bytes.
        let entry = PeerEntry(endpoint: name, identity: [UInt8](repeating: 0xab, count: PeerEntry.identityByteCount))
        let reply = RegisterReply(peers: PeerList(entries: Array(repeating: entry, count: l.maxPeers)),
                                  architecture: String(repeating: "a", count: l.maxNameBytes), schemaHash: 1)
        let encoded = try reply.encode(limits: l)
        #expect(encoded.count <= l.maxControlMessageBytes, "a full Register reply (\(encoded.count) bytes) must fit the control limit")
        let status = try StatusReply(json: String(repeating: "x", count: l.maxTextBytes)).encode(limits: l)
        #expect(status.count <= l.maxControlMessageBytes)
        let error = try ErrorReply(code: .internal, message: String(repeating: "e", count: l.maxTextBytes)).encode(limits: l)
        #expect(error.count <= l.maxControlMessageBytes)
    }
}
