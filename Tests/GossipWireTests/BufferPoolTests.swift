// MessageDecoder's pool of message buffers: a released buffer of the same size is reused,
// one the application still holds never is, and the pool stays within its byte bound.
import Testing
@testable import GossipWire

@Suite struct BufferPoolTests {
    private func message(_ n: Int, fill: UInt8) throws -> [UInt8] {
        let s = ByteStorage(count: n)
        s.mutableBytes.initializeMemory(as: UInt8.self, repeating: fill)
        return try OutboundMessage(type: .ping, kind: .request, requestID: 1, payload: ByteSlice(s), checksum: false).serialized()
    }

    private func receive(_ d: MessageDecoder, _ bytes: [UInt8]) throws -> InboundMessage {
        try d.append(bytes)
        return try #require(d.nextMessage())
    }

    @Test func releasedBufferIsReusedHeldOneIsNot() throws {
        let d = MessageDecoder()
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

    @Test func poolIsBounded() throws {
        let d = MessageDecoder(maxPooledBytes: 3 << 20)
        for size in [1 << 20, 2 << 20, (3 << 20) / 2, 1 << 20] {
            _ = try receive(d, try message(size, fill: 7))
            #expect(d.pooledBufferBytes <= 3 << 20)
        }
        let off = MessageDecoder(maxPooledBytes: 0)
        _ = try receive(off, try message(2 << 20, fill: 7))
        #expect(off.pooledBufferBytes == 0)
    }
}
