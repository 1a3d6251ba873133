// SwimRunner (PeerSwim.swift) on real UDP sockets on loopback: resolving a member's host name
// happens off the probe path, so a name server that does not answer stalls nobody else's probes.
@testable import GossipNode
import Dispatch
import Foundation
import GossipNet
import Logging
import Synchronization
import Testing
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The names a test's resolver was asked for.
private final class Asked: Sendable {
    let names = Mutex<[String]>([])
}

@Suite struct SwimRunnerTests {
    /// A UDP port on 127.0.0.1 that was free a moment ago (bound with port 0, then closed).
    static func freeUDPPort() throws -> UInt16 {
        #if canImport(Glibc)
        let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        #else
        let fd = socket(AF_INET, SOCK_DGRAM, 0)
        #endif
        guard fd >= 0 else { throw NodeError("socket: errno \(errno)") }
        defer { close(fd) }
        var a = sockaddr_in()
        a.sin_family = sa_family_t(AF_INET)
        a.sin_addr.s_addr = inet_addr("127.0.0.1")
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &a) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { s in
                bind(fd, s, len) == 0 && getsockname(fd, s, &len) == 0
            }
        }
        guard ok else { throw NodeError("bind/getsockname: errno \(errno)") }
        return UInt16(bigEndian: a.sin_port)
    }

    /// Waits (polling, with a generous deadline) until `condition` holds; false on timeout.
    static func wait(_ condition: () -> Bool) -> Bool {
        let deadline = ContinuousClock.now + .seconds(30)
        while !condition() {
            if ContinuousClock.now > deadline { return false }
            Thread.sleep(forTimeInterval: 0.01)
        }
        return true
    }

    @Test func aResolverThatBlocksDoesNotStallProbingOfTheOtherMembers() throws {
        var config = SwimConfig()
        config.probeInterval = .milliseconds(50)
        config.probeTimeout = .milliseconds(25)
        let pa = try Self.freeUDPPort(), pb = try Self.freeUDPPort()
        let a = "127.0.0.1:\(pa)", b = "127.0.0.1:\(pb)"
        let slow = "slow.invalid:9"
        // A's name server never answers until the test ends.
        let gate = DispatchSemaphore(value: 0)
        let asked = Asked()
        let quiet = Logger(label: "t", factory: { _ in SwiftLogNoOpLogHandler() })
        let ra = try SwimRunner(selfID: a, host: "127.0.0.1", port: pa, config: config, networkKey: nil, logger: quiet,
                                resolve: { ep in
                                    asked.names.withLock { $0.append(ep.description) }
                                    gate.wait()
                                    return nil
                                },
                                members: { [b, slow] }, apply: { _, _ in })
        let rb = try SwimRunner(selfID: b, host: "127.0.0.1", port: pb, config: config, networkKey: nil, logger: quiet,
                                resolve: { _ in nil }, members: { [a] }, apply: { _, _ in })
        defer {
            gate.signal()
            ra.stop()
            rb.stop()
        }
        ra.start()
        rb.start()
        #expect(Self.wait { !asked.names.withLock { $0.isEmpty } }, "A never handed \(slow) to its resolver")
        // The resolver is now blocked inside the lookup of the name; A goes on probing B.
        let acks = ra.status.acks
        #expect(Self.wait { ra.status.acks >= acks + 5 },
                "A got \(ra.status.acks - acks) acks from B after its resolver blocked on \(slow): probing stalled")
        #expect(asked.names.withLock { $0 } == [slow], "the name is asked once, while its lookup is in progress")
        #expect(rb.status.alive == 1 && ra.status.probes > 0)
    }
}
