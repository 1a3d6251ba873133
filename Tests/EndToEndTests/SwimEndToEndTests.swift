// SWIM in real processes (SPEC §5.10): 4 gossipd peers on 127.0.0.1 with a network key probe
// each other over UDP on their listen ports, every datagram sealed (§13.13), with a 500 ms
// probe period (half the default; `--swim-interval-ms`, `--swim-timeout-ms`). One is frozen with SIGSTOP for half the suspicion timeout: nobody
// drops it. Another is SIGKILLed: every other peer stops listing it within a bound derived
// from the SWIM configuration (one round of probes, the period, the suspicion timeout, a
// margin for dissemination and this loaded machine).
import Foundation
import GossipNet
import GossipWire
@testable import GossipNode
import Testing

@Suite(.serialized)
struct SwimEndToEndTests {
    @Test func aFrozenPeerSurvivesAndAKilledOneIsDropped() throws {
        let c = try Cluster("swim", secure: true)
        defer { c.shutdown() }
        // Half the default period and ack timeout: the same protocol in half the time.
        var config = SwimConfig()
        config.probeInterval = .milliseconds(500)
        config.probeTimeout = .milliseconds(250)
        let swim = ["--swim-interval-ms", "500", "--swim-timeout-ms", "250"]
        let boot = try c.bootstrap()
        var peers: [NodeProcess] = []
        for i in 0..<4 {
            peers.append(try c.peer(["--bootstrap", boot.endpoint.description, "--pace-ms", "100"] + swim, shard: "\(i)/4"))
        }
        try c.wait("every peer's SWIM holds the other three alive", timeout: 90, nodes: peers) {
            try peers.allSatisfy { p in
                let s = try c.status(p)
                return s.swim?.alive == 3 && s.peers.count == 3
            }
        }
        for p in peers {
            let s = try c.status(p).swim
            #expect(s?.sealed == true && s?.dropped == 0, "\(p.name): \(String(describing: s))")
        }
        let suspicion = config.suspicionTimeout(members: 4)   // 2 s: 4 x max(1, log10 4) x 0.5 s

        // SIGSTOP for half the suspicion timeout: suspected, it refutes when it runs again.
        let frozen = peers[3]
        kill(frozen.pid, SIGSTOP)
        Thread.sleep(forTimeInterval: suspicion.seconds / 2)   // the fault being injected, not a wait for a condition
        kill(frozen.pid, SIGCONT)
        let watchUntil = Date().addingTimeInterval(suspicion.seconds + 3)
        var checks = 0
        while Date() < watchUntil {
            for p in peers[0..<3] {
                let s = try c.status(p)
                #expect(s.peers.contains(frozen.endpoint.description), "\(p.name) dropped the frozen peer: \(s.peers)")
                #expect(s.swim?.dead == 0, "\(p.name) declared a member dead: \(String(describing: s.swim))")
            }
            checks += 1
            Thread.sleep(forTimeInterval: 0.25)
        }
        #expect(checks > 3)
        // Usually it was suspected and refuted (incarnation 1); a 1 s pause may also pass unnoticed.
        try c.wait("every peer holds the other three alive again", timeout: 20, nodes: peers) {
            try peers.allSatisfy { try c.status($0).swim?.alive == 3 }
        }
        print("swim: frozen peer's incarnation after the pause: \(try c.status(frozen).swim?.incarnation ?? 0)")

        // SIGKILL: dropped by all others within the bound.
        let victim = peers[2]
        let others = [peers[0], peers[1], peers[3]]
        kill(victim.pid, SIGKILL)
        victim.process.waitUntilExit()
        let killedAt = Date()
        let bound = config.probeInterval * 4 + config.probeInterval + suspicion + .seconds(5)
        try c.wait("every other peer stops listing the killed peer within \(bound)", timeout: bound.seconds, nodes: others) {
            try others.allSatisfy { !(try c.status($0).peers.contains(victim.endpoint.description)) }
        }
        let detected = Date().timeIntervalSince(killedAt)
        print("swim: killed peer dropped by all 3 others after \(String(format: "%.1f", detected)) s (bound \(bound))")
        for p in others {
            let s = try c.status(p)
            #expect(s.swim?.dead == 1 && s.swim?.alive == 2, "\(p.name): \(String(describing: s.swim))")
        }
    }
}
