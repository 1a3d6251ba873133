// The process's receive buffers (ReceiveBuffers): a released buffer of the same size is
// reused, one the application still holds never is, the pool stays within its bounds, the
// budget covers all decoders together and refuses what does not fit, and trimming drops
// released buffers.
import Testing
@testable import GossipWire

@Suite struct BufferPoolTests {
    private func message(_ n: Int, fill: UInt8, type: MessageType = .gossipExchange) throws -> [UInt8] {
        let s = ByteStorage(count: n)
        s.mutableBytes.initializeMemory(as: UInt8.self, repeating: fill)
        return try OutboundMessage(type: type, kind: .request, requestID: 1, payload: ByteSlice(s), checksum: false).serialized()
    }

    private func receive(_ d: MessageDecoder, _ bytes: [UInt8]) throws -> InboundMessage {
        try d.append(bytes)
        return try #require(d.nextMessage())
    }

    @Test func releasedBufferIsReusedHeldOneIsNot() throws {
        let buffers = ReceiveBuffers(budget: 1 << 30)
        let d = MessageDecoder(buffers: buffers)
        let n = 9 << 20   // three chunks
        var first: InboundMessage? = try receive(d, try message(n, fill: 1))
        let firstBase = first!.payload.bytes.baseAddress
        // Still held by the application: the next message must get other memory.
        let second = try receive(d, try message(n, fill: 2))
        #expect(second.payload.bytes.baseAddress != firstBase)
        #expect(first!.payload.bytes.allSatisfy { $0 == 1 })
        first = nil
        let third = try receive(d, try message(n, fill: 3))
        #expect(third.payload.bytes.baseAddress == firstBase)
        #expect(third.payload.bytes.allSatisfy { $0 == 3 })
        #expect(second.payload.bytes.allSatisfy { $0 == 2 })
    }

    @Test func poolIsBoundedByHalfTheBudget() throws {
        let buffers = ReceiveBuffers(budget: 6 << 20)
        let d = MessageDecoder(buffers: buffers)
        for size in [1 << 20, 2 << 20, (3 << 20) / 2, 1 << 20] {
            _ = try receive(d, try message(size, fill: 7))
            #expect(buffers.pooledBytes <= 3 << 20)
        }
    }

    @Test func oneBudgetForAllDecodersRefusesWhatDoesNotFit() throws {
        let buffers = ReceiveBuffers(budget: 5 << 20)
        let a = MessageDecoder(buffers: buffers)
        let b = MessageDecoder(buffers: buffers)
        let frames = try message(3 << 20, fill: 1)
        // a's message is half received: its whole buffer is charged already.
        try a.append(Array(frames[0..<(1 << 20)]))
        #expect(buffers.chargedBytes == 3 << 20)
        // b's message of the same size does not fit next to it: refused before allocation.
        do {
            try b.append(Array(frames[0..<64]))
            Issue.record("expected the budget to refuse the second message")
        } catch {
            #expect(error.kind == .limitExceeded)
            #expect(error.statusCode == .resourceExhausted)
            #expect(error.message.contains("receive budget"))
        }
        #expect(buffers.refusedCount == 1)
        #expect(buffers.chargedBytes == 3 << 20)
        // Once a's message is complete and released, the memory is free for others.
        try a.append(Array(frames[(1 << 20)...]))
        var m: InboundMessage? = try #require(a.nextMessage())
        #expect(m?.payload.count == 3 << 20)
        m = nil
        let c = MessageDecoder(buffers: buffers)
        let got = try receive(c, try message(3 << 20, fill: 2))
        #expect(got.payload.bytes.allSatisfy { $0 == 2 })
        #expect(buffers.peakChargedBytes <= 5 << 20)
    }

    @Test func smallMessagesAreNeverRefused() throws {
        let buffers = ReceiveBuffers(budget: 0)
        let d = MessageDecoder(buffers: buffers)
        let m = try receive(d, try message(1000, fill: 4, type: .status))
        #expect(m.payload.count == 1000)
        #expect(buffers.chargedBytes == 0)
    }

    @Test func trimDropsReleasedBuffersAndCreditsTheBudget() throws {
        let buffers = ReceiveBuffers(budget: 64 << 20)
        let d = MessageDecoder(buffers: buffers)
        var m: InboundMessage? = try receive(d, try message(2 << 20, fill: 5))
        #expect(buffers.pooledBytes == 2 << 20)
        // Held by the application: trimming keeps it (and it stays charged).
        #expect(buffers.trim() == 0)
        #expect(buffers.chargedBytes == 2 << 20)
        m = nil
        _ = m
        // Not idle long enough yet: nothing happens.
        #expect(buffers.trim(ifIdleFor: .seconds(3600)) == 0)
        #expect(buffers.trim() == 2 << 20)
        #expect(buffers.pooledBytes == 0)
        #expect(buffers.chargedBytes == 0)
    }
}
