// FrameProxy: an RPC session through the proxy behaves exactly as without it, and the
// observer sees every byte of both directions (decoded here into frames and counted).
import Foundation
import Testing
import GossipWire
@testable import GossipNet

@Suite struct FrameProxyTests {
    @Test func rpcThroughProxyIsUnchangedAndFullyObserved() async throws {
        var limits = Limits()
        limits.maxFrameBytes = 8192
        limits.chunkBytes = 4000
        var config = ServerConfig()
        config.limits = limits
        let server = RPCServer(config: config)
        server.register(.ping, handler: echo)
        server.register(.gossipExchange, handler: echo)
        server.register(.status) { _, r in r.fail(.notFound, "nothing here") }
        let upstream = try server.start(host: "127.0.0.1", port: 0)

        let toServer = Box<[UInt8]>()
        let toClient = Box<[UInt8]>()
        let events = Box<String>()
        let proxy = FrameProxy(upstream: upstream, bufferBytes: 16 << 10) { e in
            switch e {
            case .opened: events.append("open")
            case .closed: events.append("close")
            case .data(_, .clientToServer, let b): toServer.append(b)
            case .data(_, .serverToClient, let b): toClient.append(b)
            }
        }
        let front = try proxy.start(host: "127.0.0.1", port: 0)
        let client = RPCClient(limits: limits)
        let big = pattern(100_000)
        var requestFrames = 0
        for i in 0..<5 {
            let r = try await client.call(front, type: i == 4 ? .gossipExchange : .ping, payload: i == 4 ? big : bytes("msg \(i)"), deadline: .seconds(10))
            #expect(r.payload.array == (i == 4 ? big.array : Array("msg \(i)".utf8)))
            requestFrames += i == 4 ? 25 : 1
        }
        do {
            _ = try await client.call(front, type: .status, payload: bytes("?"), deadline: .seconds(10))
            Issue.record("expected NOT_FOUND")
        } catch {
            #expect(error.code == .notFound && error.message == "nothing here")
        }
        requestFrames += 1
        client.close()
        await waitFor("proxy to report the connection closed") { events.all.contains("close") }
        #expect(events.all == ["open", "close"])

        func frames(_ chunks: [[UInt8]]) throws -> (frames: Int, messages: Int, bytes: Int) {
            let d = MessageDecoder(limits: limits)
            var frames = 0
            d.onFrame = { _ in frames += 1 }
            var bytes = 0
            for c in chunks { try d.append(c); bytes += c.count }
            try d.finish()
            var messages = 0
            while d.nextMessage() != nil { messages += 1 }
            return (frames, messages, bytes)
        }
        let up = try frames(toServer.all)
        let down = try frames(toClient.all)
        #expect(up.messages == 6 && up.frames == requestFrames)
        #expect(down.messages == 6 && down.frames == requestFrames)
        #expect(up.bytes == server.stats.bytesIn)
        #expect(down.bytes == server.stats.bytesOut)
        proxy.stop()
        let done = Flag()
        server.shutdown(grace: .seconds(1)) { done.set() }
        await waitFor("server shutdown") { done.isSet }
    }
}
