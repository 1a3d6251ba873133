// Fair admission (SPEC §11): the per-address connection cap answers the connection-level
// RESOURCE_EXHAUSTED, and a full server evicts its oldest idle connection for a newcomer.
import Foundation
@testable import GossipNet
import GossipWire
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// A blocking TCP socket connected to 127.0.0.1:port from source address `source`
/// (any address of 127/8 is loopback on Linux); nil when `source` cannot be bound.
func connectFrom(_ source: String, to port: UInt16) -> Int32? {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return nil }
    var src = sockaddr_in()
    src.sin_family = sa_family_t(AF_INET)
    src.sin_addr.s_addr = inet_addr(source)
    let b = withUnsafePointer(to: &src) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
        bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
    var dst = sockaddr_in()
    dst.sin_family = sa_family_t(AF_INET)
    dst.sin_port = port.bigEndian
    dst.sin_addr.s_addr = inet_addr("127.0.0.1")
    let c = b == 0 ? withUnsafePointer(to: &dst) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
        connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } } : -1
    guard c == 0 else { close(fd); return nil }
    return fd
}

/// The status code of the connection-level error frame at the start of `bytes`, if any.
func connectionErrorCode(_ bytes: [UInt8]) -> (StatusCode, String)? {
    guard bytes.count >= FrameHeader.size else { return nil }
    let type = UInt16(bytes[6]) | UInt16(bytes[7]) << 8
    guard type == MessageType.connection.rawValue, bytes[5] & FrameFlags.error.rawValue != 0 else { return nil }
    let length = Int(bytes[0]) | Int(bytes[1]) << 8 | Int(bytes[2]) << 16 | Int(bytes[3]) << 24
    guard length >= FrameHeader.size, length <= bytes.count else { return nil }
    let payload = Array(bytes[FrameHeader.size..<length])
    guard let reply = try? ErrorReply.decode(ByteSlice(ByteStorage(copying: payload))) else { return nil }
    return (reply.code, reply.message)
}

@Suite struct FairAdmissionTests {
    /// One address beyond `maxConnectionsPerAddress` gets RESOURCE_EXHAUSTED and is closed;
    /// another address is still admitted.
    @Test func connectionsBeyondThePerAddressCapAreRefused() async throws {
        var config = ServerConfig()
        config.maxConnectionsPerAddress = 3
        config.silentTimeout = .seconds(30)
        guard let h = try Harness.make(.ipv4, config: config, setup: { $0.register(.ping, handler: echo) }) else { return }
        var held: [Int32] = []
        defer { held.forEach { close($0) } }
        for _ in 0..<3 {
            guard let fd = connectFrom("127.0.0.2", to: h.endpoint.port) else {
                print("skipped: 127.0.0.2 cannot be bound here"); await h.stop(); return
            }
            held.append(fd)
        }
        #expect(await waitFor("3 connections admitted") { h.server.stats.connections == 3 })
        let fourth = try #require(connectFrom("127.0.0.2", to: h.endpoint.port))
        var tv = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fourth, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        let (got, sawEnd) = readToEnd(fourth, timeout: .seconds(10))
        close(fourth)
        #expect(sawEnd, "the server did not close the 4th connection from 127.0.0.2")
        let err = connectionErrorCode(got)
        #expect(err?.0 == .resourceExhausted, "got \(got.count) bytes: \(String(describing: err))")
        #expect(err?.1.contains("per-address") == true, "\(String(describing: err?.1))")
        #expect(h.server.stats.refusedConnections == 1)
        // 127.0.0.1 is another address: served.
        let r = try await h.client.call(h.endpoint, type: .ping, payload: bytes("ok"), deadline: .seconds(10))
        #expect(text(r) == "ok")
        await h.stop()
    }

    /// A full server admits a newcomer by evicting its oldest connection with nothing in
    /// flight (told RESOURCE_EXHAUSTED, then closed); a connection whose request is in
    /// flight is never the one evicted.
    @Test func fullServerEvictsTheOldestIdleConnection() async throws {
        var config = ServerConfig()
        config.maxConnections = 3
        config.maxConnectionsPerAddress = 0
        config.silentTimeout = .seconds(30)
        let parked = Box<RPCResponder>()
        guard let h = try Harness.make(.ipv4, config: config, setup: { s in
            s.register(.ping, handler: echo)
            s.register(.status) { _, r in parked.append(r) }   // answered at the end
        }) else { return }
        // The oldest: a request in flight. Then two idle ones.
        let busy = try await rawConnect(h.endpoint)
        defer { close(busy) }
        writeAll(busy, OutboundMessage.empty(type: .status, kind: .request, requestID: 1).serialized())
        #expect(await waitFor("the busy request to arrive") { h.server.stats.inFlight == 1 })
        let idle1 = try await rawConnect(h.endpoint)
        defer { close(idle1) }
        #expect(await waitFor("idle 1 admitted") { h.server.stats.connections == 2 })
        let idle2 = try await rawConnect(h.endpoint)
        defer { close(idle2) }
        #expect(await waitFor("idle 2 admitted") { h.server.stats.connections == 3 })
        // Full: the client's connection evicts idle1 (the oldest idle), not the busy one.
        let r = try await h.client.call(h.endpoint, type: .ping, payload: bytes("in"), deadline: .seconds(10))
        #expect(text(r) == "in")
        let (b, sawEnd) = readToEnd(idle1, timeout: .seconds(10))
        #expect(sawEnd, "the oldest idle connection was not closed")
        #expect(connectionErrorCode(b)?.0 == .resourceExhausted)
        #expect(h.server.stats.evictedConnections == 1)
        #expect(!pollReadable(idle2, timeout: .milliseconds(200)), "the newer idle connection was closed too")
        #expect(!pollReadable(busy, timeout: .milliseconds(10)), "the busy connection was evicted")
        for r in parked.all { r.reply(bytes("late")) }
        await h.stop()
    }
}
