// PayloadBuffer: encodes into a reused storage produce the same bytes as the allocating API,
// reuse the storage only once every view of the previous payload is gone, and never
// overwrite a payload that is still referenced (e.g. queued as an OutboundMessage).
import Testing
@testable import GossipWire

@Test func payloadBufferIsNotFreeWhileAViewLives() throws {
    let buffer = PayloadBuffer()
    #expect(!buffer.isFree)
    let request = GossipExchangeRequest(sender: "127.0.0.1:7001", weight: 600, model: Fixtures.model())
    var first: ByteSlice? = try request.encode(into: buffer)
    #expect(first! == (try request.encode()))
    #expect(buffer.allocationCount == 1 && buffer.reuseCount == 0)
    var view: ByteSlice? = ByteSlice(first!.storage, 0..<8)
    #expect(!buffer.isFree)
    first = nil
    #expect(!buffer.isFree)       // `view` still references the storage
    #expect(view!.count == 8)
    view = nil
    #expect(buffer.isFree)
}

@Test func payloadBufferSteadyStateAndInFlightMessages() throws {
    let buffer = PayloadBuffer()
    let request = GossipExchangeRequest(sender: "127.0.0.1:7001", weight: 600, model: Fixtures.model())
    let expected = try request.encode()
    do {
        let p = try request.encode(into: buffer)
        #expect(p == expected)
    }
    #expect(buffer.isFree)
    let capacity = buffer.capacity
    // Steady state: released after each use, so every encode reuses the one storage.
    for _ in 0..<3 {
        let m = try OutboundMessage(type: .gossipExchange, kind: .request, requestID: 1,
                                    payload: try request.encode(into: buffer), checksum: false)
        #expect(m.frames.count == 1 && m.frames[0].payload == expected)
    }
    #expect(buffer.allocationCount == 1 && buffer.reuseCount == 3 && buffer.capacity == capacity)
    // A message still in flight keeps its bytes: the next encode gets a new storage.
    let inFlight = try OutboundMessage(type: .gossipExchange, kind: .request, requestID: 1,
                                       payload: try request.encode(into: buffer), checksum: false)
    let other = GossipExchangeRequest(sender: "127.0.0.1:7002", weight: 1, model: Fixtures.model(Fixtures.averaged))
    let second = try other.encode(into: buffer)
    #expect(second.storage !== inFlight.frames[0].payload.storage)
    #expect(inFlight.frames[0].payload == expected)
    #expect(second == (try other.encode()))
    #expect(buffer.allocationCount == 2)
}

@Test func payloadBufferAdoptsALargerCallerStorage() throws {
    let model = Fixtures.model()
    let expected = try model.encode()
    let buffer = PayloadBuffer(storage: ByteStorage(count: 4096))
    let p = try model.encode(into: buffer)
    #expect(buffer.reuseCount == 1 && buffer.allocationCount == 0)
    #expect(p.count == expected.count && p.range == 0..<expected.count && p.storage.count == 4096)
    #expect(p == expected)
    // The payload decodes from the view (the bytes past it are not part of it).
    let decoded = try ModelState.decode(p, expectedSchemaHash: Fixtures.hash)
    #expect(decoded == model)
    let reply = try GossipExchangeReply(weight: 400, peers: Fixtures.peers, model: model).encode(into: buffer)
    #expect(reply == (try GossipExchangeReply(weight: 400, peers: Fixtures.peers, model: model).encode()))
    // Too small: a new storage is allocated.
    let tiny = PayloadBuffer(storage: ByteStorage(count: 16))
    let q = try model.encode(into: tiny)
    #expect(q == expected && tiny.allocationCount == 1 && tiny.capacity == expected.count)
}
