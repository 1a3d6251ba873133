// Issue 8, defect 1 (acceptance): 100 connections each send the worst frame the limits allow
// (a compressed GossipExchange request as large as the node's model limit, everything but its
// last byte) and never read a reply. The node's RSS stays below 3x its model size + 100 MB,
// falls back after they close, and the node keeps answering status (and the peer training)
// throughout. Against a bootstrap and against a training peer.
import Foundation
import GossipML
import GossipNet
@testable import GossipNode
import GossipWire
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// VmRSS of `pid` in bytes (nil once the process is gone).
private func rss(_ pid: Int32) -> Int? {
    guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
          let line = text.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
          let kb = Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "") else { return nil }
    return kb * 1024
}

/// A blocking-connect, then non-blocking TCP socket to `ep` (IPv4 literal).
private func connectRaw(_ ep: Endpoint) throws -> Int32 {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw TimedOut(description: "socket() failed: \(errno)") }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_port = ep.port.bigEndian
    inet_pton(AF_INET, ep.host, &addr.sin_addr)
    let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
        connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
    guard rc == 0 else { close(fd); throw TimedOut(description: "connect to \(ep) failed: \(errno)") }
    _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
    return fd
}

/// One attacking connection: the bytes it still has to send.
private struct Attacker {
    let fd: Int32
    var sent = 0
    var dead = false
}

@Suite(.serialized)
struct MemoryBoundTests {
    /// Runs the attack against `node` and checks the bounds; `progress` reads a counter that
    /// must keep moving (training steps), or nil.
    private func attack(_ c: Cluster, _ node: NodeProcess, modelBytes: Int, progress: ((StatusReport) -> Int)?) throws {
        let bound = 3 * modelBytes + 100_000_000
        let before = try #require(rss(node.pid))
        let startProgress = try progress.map { $0(try c.status(node)) }
        // The worst frame the node's limits allow: a GossipExchange request of the whole model
        // limit, compressed, with the largest payload a compressed chunk may carry.
        let limit = Limits.default.fittingModel(payloadBytes: modelBytes).maxMessageBytes
        let payload = Compression.maxDeflatedSize(limit)
        let header = FrameHeader(frameLength: UInt32(FrameHeader.size + payload), flags: [.compressed, .endStream],
                                 type: .gossipExchange, requestID: 1, chunkRawLength: UInt32(limit),
                                 messageRawLength: UInt32(limit), checksum: 0).bytes
        var frame = header + [UInt8](repeating: 0x5A, count: payload)
        frame.removeLast()   // never finish: the node must hold (or refuse) the rest
        var attackers: [Attacker] = []
        defer { for a in attackers { close(a.fd) } }
        for _ in 0..<100 { attackers.append(Attacker(fd: try connectRaw(node.endpoint))) }
        // And the bomb, once per connection before it: a small zlib Ping whose
        // declared size (64 MiB) it really inflates to. Refused at its header now; it used to
        // be allocated and inflated on every connection.
        let bombs: [Int32] = try (0..<100).map { _ in try connectRaw(node.endpoint) }
        defer { for fd in bombs { close(fd) } }
        let bombBytes: [UInt8] = try {
            let zeros = ByteStorage(count: 64 << 20, zeroed: true)
            let z = try Compression.deflate(zeros.bytes, level: 9, shuffle: false)
            return FrameHeader(frameLength: UInt32(FrameHeader.size + z.count), flags: [.compressed, .endStream], type: .ping,
                               requestID: 1, chunkRawLength: 64 << 20, messageRawLength: 64 << 20, checksum: 0).bytes + z.array
        }()
        var peakDuringBombs = before
        for fd in bombs {
            _ = bombBytes.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            peakDuringBombs = max(peakDuringBombs, rss(node.pid) ?? 0)
        }

        var peak = peakDuringBombs
        var statusCalls = 0
        let until = Date().addingTimeInterval(4)
        while Date() < until {
            var moving = false
            for i in attackers.indices where !attackers[i].dead && attackers[i].sent < frame.count {
                let n = frame[attackers[i].sent...].withUnsafeBytes {
                    send(attackers[i].fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL))
                }
                if n > 0 { attackers[i].sent += n; moving = true }
                else if n < 0 && errno != EAGAIN && errno != EWOULDBLOCK { attackers[i].dead = true }
            }
            peak = max(peak, rss(node.pid) ?? 0)
            // Answering status throughout (each call has its own 10 s deadline).
            let s = try c.status(node)
            statusCalls += 1
            #expect(s.phase != "stopping")
            peak = max(peak, rss(node.pid) ?? 0)
            if !moving && attackers.allSatisfy({ $0.dead || $0.sent == frame.count }) && statusCalls >= 5 { break }
        }
        let fullySent = attackers.filter { !$0.dead && $0.sent == frame.count }.count
        print("memory-bound \(node.name): model \(modelBytes) B, frame \(frame.count + 1) B, RSS before \(before / 1_000_000) MB, peak \(peak / 1_000_000) MB, bound \(bound / 1_000_000) MB, \(fullySent) connections sent all but the last byte, \(statusCalls) status calls answered")
        #expect(peak < bound, "\(node.name): RSS peaked at \(peak) bytes, past 3 x model + 100 MB = \(bound)")
        #expect(statusCalls >= 5)
        if let progress, let startProgress {
            try c.wait("\(node.name) to keep training during the attack", timeout: 60, nodes: [node]) {
                progress(try c.status(node)) > startProgress
            }
        }
        for a in attackers { close(a.fd) }
        attackers.removeAll()
        // RSS falls back (within 16 MB of where it started) after the connections close.
        try c.wait("\(node.name)'s RSS to fall back near \(before / 1_000_000) MB (now \((rss(node.pid) ?? 0) / 1_000_000) MB)",
                   timeout: 30, nodes: [node]) {
            (rss(node.pid) ?? .max) < before + 16_000_000
        }
        _ = try c.status(node)
    }

    @Test func hundredWorstFramesStayWithinTheModelBound() throws {
        let c = try Cluster("memory")
        defer { c.shutdown() }
        let arch = "64,256,128,10"
        // 200 attacking connections come from 127.0.0.1, like the test's own status calls: the
        // per-address cap (README "Fair admission") would refuse most of them and the test's
        // calls too; off here, so the memory bound itself is what holds them.
        let uncapped = ["--max-conns-per-address", "0"]
        let boot = try c.bootstrap(arch: arch, extra: uncapped)
        let modelBytes = try c.model(boot).parameterCount * 4
        try attack(c, boot, modelBytes: modelBytes, progress: nil)

        let peer = try c.peer(["--bootstrap", boot.endpoint.description] + uncapped, shard: "0/1")
        try c.wait("the peer to train", nodes: [peer]) { try c.status(peer).step > 0 }
        try attack(c, peer, modelBytes: modelBytes, progress: { $0.step })
    }
}
