// SendQueue without sockets: admission against the bound, request ids written into headers,
// iovecs over header and payload views, partial writes across every boundary, completions in
// order, and what a close fails.
import Testing
import GossipWire
@testable import GossipNet
#if canImport(Glibc)
import Glibc
#endif

@Suite struct SendQueueTests {
    private func message(_ n: Int, chunk: Int = 1 << 20, type: MessageType = .gossipExchange) throws -> OutboundMessage {
        var limits = Limits()
        limits.chunkBytes = chunk
        return try OutboundMessage(type: type, kind: .request, requestID: 0, payload: pattern(n), checksum: false, limits: limits)
    }

    /// Bytes the queue would write next, gathered from its iovecs.
    private func gather(_ q: SendQueue, capacity: Int = 64) -> [UInt8] {
        let iov = UnsafeMutablePointer<iovec>.allocate(capacity: capacity)
        defer { iov.deallocate() }
        let n = q.fill(iov, capacity: capacity)
        var out: [UInt8] = []
        for i in 0..<n { out += UnsafeRawBufferPointer(start: iov[i].iov_base, count: iov[i].iov_len) }
        return out
    }

    @Test func admissionFollowsTheBound() throws {
        var q = SendQueue(maxQueuedBytes: 1000)
        let big = try message(5000)
        #expect(q.hasRoom(for: big.wireBytes), "an empty queue admits one message past the bound")
        let admitted1 = q.enqueue(big)
        #expect(admitted1)
        let admitted2 = q.enqueue(try message(10))
        #expect(!admitted2, "nothing more while past the bound")
        #expect(q.count == 1 && q.queuedBytes == big.wireBytes && q.peakQueuedBytes == big.wireBytes)
        _ = q.advance(by: big.wireBytes)
        #expect(q.isEmpty && q.queuedBytes == 0)
        let admitted3 = q.enqueue(try message(400))
        #expect(admitted3)
        let admitted4 = q.enqueue(try message(400))
        #expect(admitted4)
        let admitted5 = q.enqueue(try message(400))
        #expect(!admitted5)
    }

    @Test func writesEveryByteOnceInOrderWhateverTheWriteSizes() throws {
        for step in [1, 7, 24, 25, 100, 4096] {
            var q = SendQueue(maxQueuedBytes: 1 << 30)
            let messages = [try message(300, chunk: 128), try message(0, type: .status), try message(1000, chunk: 1000)]
            var expected: [UInt8] = []
            var done: [Int] = []
            for (i, m) in messages.enumerated() {
                let admitted6 = q.enqueue(m, requestID: UInt32(40 + i))
                #expect(admitted6)
                // The header carries the request id the queue was given.
                var bytes = m.serialized()
                var at = 0
                for f in m.frames {
                    withUnsafeBytes(of: UInt32(40 + i).littleEndian) { for k in 0..<4 { bytes[at + 8 + k] = $0[k] } }
                    at += Int(f.header.frameLength)
                }
                expected += bytes
            }
            var sent: [UInt8] = []
            while !q.isEmpty {
                let next = gather(q)
                let n = min(step, next.count)
                sent += next[0..<n]
                for f in q.advance(by: n) { done.append(Int(f.message.wireBytes)); f.completion?(true) }
            }
            #expect(sent == expected, "write size \(step)")
            #expect(done == messages.map(\.wireBytes), "completions in order, once each (write size \(step))")
            #expect(q.queuedBytes == 0)
        }
    }

    @Test func fillRespectsTheIovecCapacity() throws {
        var q = SendQueue(maxQueuedBytes: 1 << 30)
        #expect(q.enqueue(try message(1000, chunk: 100)))   // 10 frames: 20 iovecs
        let iov = UnsafeMutablePointer<iovec>.allocate(capacity: 64)
        defer { iov.deallocate() }
        #expect(q.fill(iov, capacity: 5) == 4)
        #expect(q.fill(iov, capacity: 64) == 20)
    }

    @Test func removeAllReturnsTheUnsentCompletions() throws {
        var q = SendQueue(maxQueuedBytes: 1 << 30)
        let results = Box<Bool>()
        let first = try message(100)
        let admitted7 = q.enqueue(first, completion: { results.append($0) })
        #expect(admitted7)
        let admitted8 = q.enqueue(try message(100), completion: { results.append($0) })
        #expect(admitted8)
        for f in q.advance(by: first.wireBytes + 10) { f.completion?(true) }
        for c in q.removeAll() { c(false) }
        #expect(results.all == [true, false])
        #expect(q.isEmpty && q.queuedBytes == 0)
    }
}
