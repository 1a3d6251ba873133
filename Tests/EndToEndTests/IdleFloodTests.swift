// Issue 11 acceptance, fair admission: 300 idle connections held from one address
// (127.0.0.2; all of 127/8 is loopback on Linux), reconnected whenever the bootstrap closes
// them, no longer keep a peer on another address (127.0.0.1) from joining through it.
// Before the fix (main at 3bf2c26) the same attack held all 256 slots and the peer was
// refused RESOURCE_EXHAUSTED for ~29 s, joining only by luck just before its 30 s onboarding
// deadline.
import Foundation
import GossipNet
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Holds up to `count` connections from `source` to 127.0.0.1:port on a thread of its own,
/// reconnecting (at most 50 per 100 ms) those the server closes, until `stop()`.
final class IdleFlood: @unchecked Sendable {
    private let lock = NSLock()
    private var stopped = false
    private var reconnects = 0
    private var held = 0
    private var maxHeld = 0
    private let done = DispatchSemaphore(value: 0)

    /// Returns nil when `source` cannot be bound here.
    static func start(from source: String, to port: UInt16, count: Int) -> IdleFlood? {
        guard let probe = IdleFlood.connect(source, port) else { return nil }
        close(probe)
        let f = IdleFlood()
        Thread { f.run(source, port, count) }.start()
        return f
    }

    var figures: (reconnects: Int, held: Int, maxHeld: Int) { lock.withLock { (reconnects, held, maxHeld) } }

    func stop() {
        lock.withLock { stopped = true }
        done.wait()
    }

    private func run(_ source: String, _ port: UInt16, _ count: Int) {
        var fds = [Int32](repeating: -1, count: count)
        var buf = [UInt8](repeating: 0, count: 4096)
        while !lock.withLock({ stopped }) {
            var made = 0
            for i in fds.indices where fds[i] < 0 && made < 50 {
                if let fd = IdleFlood.connect(source, port) { fds[i] = fd; made += 1 }
            }
            var polls = fds.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
            _ = poll(&polls, nfds_t(polls.count), 100)
            for (i, p) in polls.enumerated() where p.fd >= 0 && p.revents != 0 {
                let n = buf.withUnsafeMutableBytes { recv(p.fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
                if n <= 0 && !(n < 0 && errno == EAGAIN) { close(p.fd); fds[i] = -1 }
            }
            let live = fds.filter { $0 >= 0 }.count
            lock.withLock { reconnects += made; held = live; maxHeld = max(maxHeld, live) }
        }
        for fd in fds where fd >= 0 { close(fd) }
        done.signal()
    }

    private static func connect(_ source: String, _ port: UInt16) -> Int32? {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return nil }
        var tv = timeval(tv_sec: 1, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var src = sockaddr_in()
        src.sin_family = sa_family_t(AF_INET)
        src.sin_addr.s_addr = inet_addr(source)
        var dst = sockaddr_in()
        dst.sin_family = sa_family_t(AF_INET)
        dst.sin_port = port.bigEndian
        dst.sin_addr.s_addr = inet_addr("127.0.0.1")
        let ok = withUnsafePointer(to: &src) { s in s.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } } == 0
            && withUnsafePointer(to: &dst) { d in d.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } } == 0
        if !ok { close(fd); return nil }
        return fd
    }
}

@Suite(.serialized)
struct IdleFloodTests {
    @Test func threeHundredIdleConnectionsFromOneAddressDoNotBlockAJoin() throws {
        let c = try Cluster("idle-flood")
        defer { c.shutdown() }
        let b = try c.bootstrap()
        guard let flood = IdleFlood.start(from: "127.0.0.2", to: b.endpoint.port, count: 300) else {
            print("skipped: 127.0.0.2 cannot be bound here (needs Linux's 127/8 loopback)")
            return
        }
        var stopped = false
        defer { if !stopped { flood.stop() } }
        // Let the flood take what it can (and keep reconnecting) before the peer starts.
        try c.wait("the flood to hold connections", timeout: 30) { flood.figures.reconnects >= 300 }
        let t0 = ContinuousClock.now
        let p = try c.peer(["--bootstrap", "\(b.endpoint)"], shard: "0/1")
        let joined = ContinuousClock.now - t0
        try c.wait("the bootstrap to list the peer", timeout: 30) { try c.status(b).peers.contains(p.endpoint.description) }
        let f = flood.figures
        flood.stop()
        stopped = true
        print("idle flood from 127.0.0.2: the flood held \(f.held) (at most \(f.maxHeld)) of its 300 connections, reconnected \(f.reconnects) times; a peer from 127.0.0.1 was ready \(joined) after it started")
        #expect(f.reconnects > 300, "the flood did not keep reconnecting (\(f.reconnects))")
    }
}
