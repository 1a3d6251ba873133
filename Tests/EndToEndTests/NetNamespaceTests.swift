// End-to-end across real network boundaries (issue 11 item 6): six gossipd peers, each in its
// own network namespace on one bridge (NetNamespace.swift), with no bootstrap: they find each
// other, train on digits and converge; then a 3|3 partition is detected by both sides and,
// once lifted, heals with no manual action (everyone lists all five others again and the
// models converge again). Skipped with a clear message where namespaces cannot be made.
import Foundation
import GossipML
import GossipNet
@testable import GossipNode
import Testing

@Suite(.serialized, .enabled(if: NetNamespaceLab.available, "\(NetNamespaceLab.unavailableReason ?? "")"))
struct NetNamespaceTests {
    /// Relative L2 spread the models must get within ("a few %"), while still training at a
    /// constant learning rate.
    static let converged = 0.05

    @Test func sixNamespacedPeersFindEachOtherConvergeAndHealAPartition() throws {
        let t0 = Date()
        func elapsed() -> String { String(format: "%.1f s", Date().timeIntervalSince(t0)) }
        // With a network key: TCP on the Noise channel, SWIM and the multicast announcements
        // as sealed datagrams (SPEC §13.13), as a real deployment across hosts would run.
        let lab = try NetNamespaceLab("six", hosts: 6, secure: true)
        defer { lab.shutdown() }
        let port = 7946
        let seedDir = lab.dir + "/h0-state"
        try lab.seedStateDir(seedDir, arch: "64,32,10")
        func args(_ i: Int) -> [String] {
            var a = ["peer", "--listen", "\(lab.addresses[i]):\(port)", "--dataset", "digits", "--shard", "\(i)/6",
                     "--lr", "0.05", "--batch", "32", "--input-noise", "0", "--local-steps", "10", "--eval-every", "5",
                     "--exchange-timeout", "2", "--pace-ms", "100", "--no-converge", "--log-level", "info",
                     "--backoff-ms", "250", "--backoff-max-ms", "2000",
                     // SWIM probes every 500 ms (half the default): the partition is found sooner.
                     "--swim-interval-ms", "500", "--swim-timeout-ms", "250"]
            // Peer 0 holds the initial model (a checkpoint in its state dir); the others get it
            // from whoever they find.
            if i == 0 { a += ["--state-dir", seedDir, "--checkpoint-every", "1000"] }
            // No bootstrap, no --join: the peers find each other by multicast (SPEC §5.11).
            a += ["--discover", "multicast"]
            return a
        }
        let allArgs = (0..<6).map(args)
        var nodes: [NetNamespaceLab.Node] = [try lab.start(host: 0, allArgs[0])]
        let started = Mutexed<[Int: Result<NetNamespaceLab.Node, Error>]>([:])
        DispatchQueue.concurrentPerform(iterations: 5) { k in
            let r = Result { try lab.start(host: k + 1, allArgs[k + 1]) }
            started.withLock { $0[k + 1] = r }
        }
        for i in 1..<6 { nodes.append(try started.withLock { $0[i]! }.get()) }
        let all = Set(nodes.map(\.endpoint))
        print("netns: 6 peers serving after \(elapsed()) (--discover multicast)")

        func lists(_ n: NetNamespaceLab.Node) throws -> Set<String> { Set(try n.status().peers) }
        func everyoneListsAll() throws -> Bool {
            try nodes.allSatisfy { try lists($0) == all.subtracting([$0.endpoint]) }
        }
        try wait("every peer lists the other 5", nodes) { try everyoneListsAll() }
        print("netns: full membership after \(elapsed())")
        // Trained a while (the models start equal, so an early spread would prove nothing).
        try wait("every peer trains 15 rounds", nodes) { try nodes.allSatisfy { try $0.status().round >= 15 } }
        try wait("models within \(NetNamespaceTests.converged) relative L2", nodes) { try lab.spread(nodes) < NetNamespaceTests.converged }
        let before = try lab.spread(nodes)
        print("netns: converged (spread \(before)) after \(elapsed())")

        // Partition 3|3: each side must stop listing the other.
        let a = Array(nodes[0..<3]), b = Array(nodes[3..<6])
        let aSet = Set(a.map(\.endpoint)), bSet = Set(b.map(\.endpoint))
        let cut = Date()
        try lab.partition([3, 4, 5])
        try wait("each side of the 3|3 partition stops listing the other side", nodes) {
            try a.allSatisfy { try lists($0).isDisjoint(with: bSet) } && b.allSatisfy { try lists($0).isDisjoint(with: aSet) }
        }
        let detected = Date().timeIntervalSince(cut)
        let apart = try lab.spread(nodes)
        // Each side still lists its own members.
        for n in nodes {
            let own = (aSet.contains(n.endpoint) ? aSet : bSet).subtracting([n.endpoint])
            let l = try lists(n)
            #expect(l.isSuperset(of: own), "\(n.name) lost a member of its own side: \(l)")
        }
        print(String(format: "netns: partition detected by all 6 after %.1f s (spread then %.4f) at %@", detected, apart, elapsed()))

        // Lift it: no manual action, everyone lists all five others again and the models agree.
        let lifted = Date()
        try lab.heal()
        try wait("after the partition is lifted, every peer lists the other 5 again", nodes) { try everyoneListsAll() }
        let rejoined = Date().timeIntervalSince(lifted)
        try wait("models within \(NetNamespaceTests.converged) relative L2 again after healing", nodes) {
            try lab.spread(nodes) < NetNamespaceTests.converged
        }
        print(String(format: "netns: healed (membership after %.1f s, converged after %.1f s) at %@",
                     rejoined, Date().timeIntervalSince(lifted), elapsed()))
        for n in nodes {
            let s = try n.status()
            #expect(s.exchanges.done > 0, "\(n.name) completed no exchange")
            #expect(s.phase == "training", "\(n.name) is \(s.phase)")
        }
    }

    /// Polls `condition` (every 0.25 s: a spread exports six models) with `Cluster.wait`; fails
    /// with `what`, every node's peer list and the logs after `timeout`.
    private func wait(_ what: String, _ nodes: [NetNamespaceLab.Node], timeout: Double = 120, _ condition: () throws -> Bool) throws {
        try Cluster.wait(what, timeout: timeout, interval: 0.25, details: {
            let views = nodes.map { n in "\(n.name) \(n.endpoint) lists \((try? n.status().peers) ?? [])" }.joined(separator: "\n")
            let logs = nodes.map { "--- \($0.name) (\($0.endpoint)):\n\($0.logTail)" }.joined(separator: "\n")
            return views + "\n" + logs
        }, condition)
    }
}
