// Clients that hold server resources without doing their part: sockets that never send a
// request, and a client that sends requests but never reads the replies.
import Foundation
@testable import GossipNet
import GossipWire
import Testing

@Suite struct SlowClientTests {
    /// Idle sockets that never send a request are closed after `silentTimeout`, so they cannot
    /// hold every connection slot; the server keeps serving.
    @Test func silentConnectionsAreClosed() async throws {
        var config = ServerConfig()
        config.maxConnections = 4
        config.silentTimeout = .seconds(1)
        guard let h = try Harness.make(.ipv4, config: config, setup: { $0.register(.ping, handler: echo) }) else { return }
        var fds: [Int32] = []
        for _ in 0..<4 { fds.append(try await rawConnect(h.endpoint)) }
        #expect(await waitFor("4 silent connections to be accepted") { h.server.stats.acceptedConnections >= 4 })
        for fd in fds {
            let (_, sawEnd) = readToEnd(fd, timeout: .seconds(10))
            #expect(sawEnd, "the server did not close a silent connection")
            close(fd)
        }
        await waitFor("the slots to be free") { h.server.stats.connections == 0 }
        let r = try await h.client.call(h.endpoint, type: .ping, payload: bytes("z"), deadline: .seconds(10))
        #expect(text(r) == "z")
        await h.stop()
    }

    /// A client that keeps sending requests for large replies and never reads is cut off once
    /// its waiting replies pass the byte bound; the server's queued bytes stay bounded.
    @Test func clientThatNeverReadsIsCutOff() async throws {
        var config = ServerConfig()
        config.maxQueuedBytes = 4 << 20
        let big = pattern(1 << 20)
        guard let h = try Harness.make(.ipv4, config: config, setup: { s in
            s.register(.getModel) { _, r in r.reply(big, options: .init(checksum: false)) }
        }) else { return }
        let fd = try await rawConnect(h.endpoint)
        defer { close(fd) }
        #expect(await waitFor("the connection to be accepted") { h.server.stats.connections == 1 })
        // 60 requests (60 MB of replies); never read.
        for id in 1...60 {
            let m = OutboundMessage.empty(type: .getModel, kind: .request, requestID: UInt32(id))
            writeAll(fd, m.serialized())
        }
        #expect(await waitFor("the server to drop the connection") { h.server.stats.connections == 0 })
        #expect(h.server.stats.requests >= 8, "the server dropped it before replies piled up")
        // It read the requests, queued at most the bound (plus one reply) and then closed.
        let (received, sawEnd) = readToEnd(fd, timeout: .seconds(30))
        #expect(sawEnd, "got \(received.count) bytes, open fds \(openFDCount())")
        #expect(received.count < 60 << 20)
        await h.stop()
    }
}
