// Connection teardown under churn: tens of thousands of short connections that end every way
// a peer can end one (read the reply and close, close without reading, reset with SO_LINGER
// 0, half-close first, read a little then reset) against a plaintext and a secure server,
// from 8 threads at once; then both servers still answer and no descriptor is left behind.
// With a Dispatch read and write source per socket this crashed the process within seconds
// (libdispatch's hang-up race, see Poller.swift). 5 s by default; GOSSIP_STRESS=<seconds>
// soaks longer, GOSSIP_STRESS_PATTERNS=01234 picks the ways to end.
import Foundation
import Testing
import GossipWire
@testable import GossipNet
#if canImport(Glibc)
import Glibc
#endif

private func blockingConnect(port: UInt16) -> Int32? {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return nil }
    var a = sockaddr_in()
    a.sin_family = sa_family_t(AF_INET)
    a.sin_port = port.bigEndian
    a.sin_addr.s_addr = inet_addr("127.0.0.1")
    let r = withUnsafePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
    if r != 0 { close(fd); return nil }
    var tv = timeval(tv_sec: 2, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    return fd
}

private func churn(port: UInt16, seconds: Double, thread: Int, ping: [UInt8]) -> Int {
    let patterns = (ProcessInfo.processInfo.environment["GOSSIP_STRESS_PATTERNS"] ?? "01234").compactMap { Int(String($0)) }
    var n = 0
    let end = Date().addingTimeInterval(seconds)
    var buf = [UInt8](repeating: 0, count: 4096)
    var rng = SystemRandomNumberGenerator()
    while Date() < end {
        guard let fd = blockingConnect(port: port) else { continue }
        let input: [UInt8] = Bool.random(using: &rng) ? ping : [0xFF, 0xFF] + [UInt8](repeating: UInt8(truncatingIfNeeded: n), count: Int.random(in: 0...3000, using: &rng))
        _ = input.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        switch patterns.randomElement(using: &rng)! {
        case 0:   // read to the end, then close
            while buf.withUnsafeMutableBytes({ recv(fd, $0.baseAddress, $0.count, 0) }) > 0 {}
        case 1:   // close at once (unread reply: the kernel may reset)
            break
        case 2:   // reset
            var l = linger(l_onoff: 1, l_linger: 0)
            setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, socklen_t(MemoryLayout<linger>.size))
        case 3:   // half-close, then read to the end
            shutdown(fd, Int32(SHUT_WR))
            while buf.withUnsafeMutableBytes({ recv(fd, $0.baseAddress, $0.count, 0) }) > 0 {}
        default:  // read a little, then reset
            _ = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, 8, 0) }
            var l = linger(l_onoff: 1, l_linger: 0)
            setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, socklen_t(MemoryLayout<linger>.size))
        }
        close(fd)
        n += 1
    }
    return n
}

@Suite struct TeardownChurnTests {
    @Test func teardownChurnNeverCrashesNorLeaks() async throws {
        let seconds = Double(ProcessInfo.processInfo.environment["GOSSIP_STRESS"] ?? "") ?? 5
        let f = SecureFixture()
        let (secure, se, _, _, _) = try f.startServer()
        var config = ServerConfig()
        config.maxConnections = 4096
        let plain = RPCServer(config: config)
        plain.register(.ping, handler: echo)
        let pe = try plain.start(host: "127.0.0.1", port: 0)
        let fdsBefore = (openSocketCount(port: pe.port), openSocketCount(port: se.port))
        let ping: [UInt8] = [0x20, 0, 0, 0, 1, 0x30, 5, 0, 6, 0, 0, 0, 8, 0, 0, 0, 8, 0, 0, 0, 0xb7, 0xdb, 0x4d, 0x64] + Array("ping".utf8) + [0, 1, 2, 3]
        let total = Box<Int>()
        let done = DispatchGroup()
        for t in 0..<8 {
            done.enter()
            Thread { total.append(churn(port: t % 2 == 0 ? pe.port : se.port, seconds: seconds, thread: t, ping: ping)); done.leave() }.start()
        }
        await withCheckedContinuation { c in done.notify(queue: .global()) { c.resume() } }
        let count = total.all.reduce(0, +)
        print("teardown churn: \(count) connections in \(seconds) s")
        #expect(count > 100, "the churn made only \(count) connections")
        // Both servers still answer, and every churned socket was closed.
        let good = RPCClient(security: f.client)
        #expect(text(try await good.call(se, type: .ping, payload: bytes("after"), deadline: .seconds(10))) == "after")
        good.close()
        let plainClient = RPCClient()
        #expect(text(try await plainClient.call(pe, type: .ping, payload: bytes("after"), deadline: .seconds(10))) == "after")
        plainClient.close()
        await waitFor("every churned connection closed by both servers", timeout: .seconds(30)) {
            plain.stats.connections == 0 && secure.stats.connections == 0
        }
        await waitFor("descriptors back at baseline", timeout: .seconds(30)) {
            (openSocketCount(port: pe.port), openSocketCount(port: se.port)) == fdsBefore
        }
        await stopServer(plain)
        await stopServer(secure)
    }
}
