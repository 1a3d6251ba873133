// Push-sum averaging end to end (SPEC §5.5): real gossipd processes on an encrypted network.
// (1) Mass conservation: after training, the peers are stopped one by one (SIGTERM); a stopping
//     peer stops pushing, refuses pushes (their senders take the mass back), waits for its own
//     pushes' outcomes and logs its final mass. With nothing lost the final masses sum to the
//     shards' row counts.
// (2) Convergence with loss: 30% of all pushes are dropped (hidden --push-loss); the network
//     still reaches a held-out accuracy >= 90% and consensus.
import Foundation
import GossipML
@testable import GossipNode
import Testing

@Suite(.serialized) struct PushSumEndToEndTests {
    /// `n` push-sum peers on shards i/n of `boot`'s network (with `stateDirs`, each in
    /// `c.dir/state<i>`).
    private func pushSumPeers(_ c: Cluster, _ boot: NodeProcess, _ n: Int, rounds: Int, stateDirs: Bool = false) throws -> [NodeProcess] {
        try (0..<n).map { i in
            try c.peer(["--bootstrap", boot.endpoint.description, "--averaging", "push-sum"],
                       shard: "\(i)/\(n)", rounds: rounds, stateDir: stateDirs ? "\(c.dir)/state\(i)" : nil)
        }
    }

    @Test func massIsConservedAcrossRealProcesses() throws {
        let c = try Cluster("pushsum-mass", secure: true)
        defer { c.shutdown() }
        let boot = try c.bootstrap()
        let peers = try pushSumPeers(c, boot, 4, rounds: 15)
        try c.wait("all peers finish 15 rounds and push", timeout: 120, nodes: peers) {
            try peers.allSatisfy { p in
                let s = try c.status(p)
                return s.phase == "averaging" && (s.pushSum?.received ?? 0) > 5 && s.peers.count == 3
            }
        }
        var rows = 0.0
        for p in peers {
            let s = try c.status(p)
            let ps = try #require(s.pushSum, "\(p.name) has no push_sum status")
            #expect(ps.mass > 0 && ps.sent > 0 && ps.confirmed > 0)
            #expect(s.exchanges.done == 0, "a push-sum peer ran a synchronous exchange")
            rows += Double(s.shardSize)
        }
        // Stop one by one: the others keep pushing meanwhile. Mass a peer discarded because it
        // found its own model the outlier (a late joiner, SPEC §5.5) is accounted separately.
        var total = 0.0, discarded = 0.0
        for p in peers {
            kill(p.pid, SIGTERM)
            p.process.waitUntilExit()
            #expect(p.process.terminationStatus == 0, "\(p.name) exited \(p.process.terminationStatus):\n\(p.logTail)")
            let (m, line) = try pushSumFinalMass(p)
            #expect(line.contains("mass_unconfirmed=0.0") && line.contains("mass_lost=0.0") && line.contains("in_flight=0"),
                    "\(p.name): \(line)")
            total += m
            discarded += try logField("mass_discarded", line)
        }
        #expect(abs(total + discarded - rows) / rows <= 1e-6,
                "final masses sum to \(total) (+ \(discarded) discarded), the shards hold \(rows) rows")
        print("push-sum mass conservation: final masses \(total) + discarded \(discarded) = \(total + discarded), shards \(rows) rows")
    }

    @Test func convergesWhenAThirdOfThePushesIsLost() throws {
        let c = try Cluster("pushsum-loss", secure: true)
        defer { c.shutdown() }
        let arch = "64,64,10"
        let boot = try c.bootstrap(arch: arch)
        var peers: [NodeProcess] = []
        for i in 0..<4 {
            peers.append(try c.peer(["--bootstrap", boot.endpoint.description, "--averaging", "push-sum", "--push-loss", "0.3", "--pace-ms", "50"],
                                    shard: "\(i)/4", rounds: 80, training: ["--lr", "0.1", "--batch", "32"]))
        }
        try c.wait("all peers finish 80 rounds", timeout: 180, nodes: peers) {
            try peers.allSatisfy { try c.status($0).phase == "averaging" }
        }
        // Peers that started late trained from a model the early ones had already moved past;
        // the early ones first refuse their pushes as outliers, then the self-check lets the
        // late ones take the early ones' pushes and the network meets (SPEC §5.5).
        try c.wait("models within 1% relative L2 of each other", timeout: 90, nodes: peers) {
            try c.spread(peers) < 0.01
        }
        let split = try DatasetSource.digits.load()
        let a = try MLPArchitecture(parsing: arch)
        for p in peers {
            let s = try c.status(p)
            let ps = try #require(s.pushSum)
            #expect(ps.lost > 0 && ps.massLost > 0, "\(p.name): the fault injection lost nothing")
            #expect(ps.mass > 0)
            let acc = evaluate(architecture: a, parameters: try c.model(p), on: split.test).accuracy
            #expect(acc >= 0.90, "\(p.name) held-out accuracy \(acc)")
        }
        #expect(try c.spread(peers) < 0.01)
    }

    /// Pushes to a killed peer's closed port are provably not delivered (the connect fails):
    /// their mass comes back (`returned`) instead of being counted unconfirmed and lost
    /// (SPEC §5.5, "not sent"). At most the one push in flight at the kill is unconfirmed.
    @Test func pushesToAClosedPortComeBack() throws {
        let c = try Cluster("pushsum-closed", secure: true)
        defer { c.shutdown() }
        let boot = try c.bootstrap()
        let peers = try pushSumPeers(c, boot, 2, rounds: 100_000)
        let (a, b) = (peers[0], peers[1])
        try c.wait("both peers push and receive", nodes: peers) {
            try peers.allSatisfy { p in try (c.status(p).pushSum?.received ?? 0) > 3 }
        }
        let before = try #require(try c.status(a).pushSum)
        kill(b.pid, SIGKILL)
        b.process.waitUntilExit()
        try c.wait("the survivor drops the killed peer", timeout: 30, nodes: [a]) { try c.status(a).peers.isEmpty }
        let after = try #require(try c.status(a).pushSum)
        #expect(after.unconfirmed - before.unconfirmed <= 1, "pushes to a closed port counted unconfirmed: \(before) -> \(after)")
        #expect(after.returned - before.returned >= 2, "the failed connects' mass did not come back: \(before) -> \(after)")
        #expect(after.inFlight == 0)
    }

    /// The mass survives a clean stop and restart: the last checkpoint carries it (SPEC §5.5).
    @Test func theMassResumesFromTheLastCheckpoint() throws {
        let c = try Cluster("pushsum-resume", secure: true)
        defer { c.shutdown() }
        let boot = try c.bootstrap()
        let peers = try pushSumPeers(c, boot, 2, rounds: 6, stateDirs: true)
        try c.wait("both peers push and receive", nodes: peers) {
            try peers.allSatisfy { p in try (c.status(p).pushSum?.received ?? 0) > 3 }
        }
        var finals: [Double] = []
        for p in peers {
            kill(p.pid, SIGTERM)
            p.process.waitUntilExit()
            #expect(p.process.terminationStatus == 0)
            finals.append(try pushSumFinalMass(p).0)
        }
        kill(boot.pid, SIGTERM)
        boot.process.waitUntilExit()
        // Alone (its bootstrap is gone, its partner stopped): it has nobody to push to.
        let again = try c.peer(["--bootstrap", boot.endpoint.description, "--averaging", "push-sum"],
                               shard: "0/2", rounds: 6, stateDir: "\(c.dir)/state0")
        let s = try c.status(again)
        #expect(s.resumedFromRound != nil)
        #expect(s.pushSum?.mass == finals[0], "resumed mass \(String(describing: s.pushSum?.mass)), final mass \(finals[0])")
    }

    /// Push-sum with convergence detection (no --rounds, SPEC §5.9): the four peers end by
    /// themselves with status 0, their final models >= 93% held out, and with nothing lost
    /// their final masses still sum to the shards' rows. Windows of 10 rounds
    /// (`--converge-window`, half the default): the same detector, judged twice as often.
    @Test func aPushSumNetworkWithoutRoundsEndsByItself() throws {
        let c = try Cluster("pushsum-end", secure: true)
        defer { c.shutdown() }
        let boot = try c.bootstrap(arch: "64,64,10")
        var peers: [NodeProcess] = []
        for i in 0..<4 {
            peers.append(try c.peer(["--bootstrap", boot.endpoint.description, "--averaging", "push-sum", "--converge-window", "10"],
                                    shard: "\(i)/4", stateDir: "\(c.dir)/state\(i)", training: [], converge: true))
        }
        try c.wait("all four peers exit by themselves", timeout: 120, nodes: peers) {
            peers.allSatisfy { !$0.process.isRunning }
        }
        var total = 0.0, discarded = 0.0, rows = 0.0
        for p in peers {
            #expect(p.process.terminationStatus == 0, "\(p.name) exited \(p.process.terminationStatus):\n\(p.logTail)")
            let log = try String(contentsOfFile: p.log, encoding: .utf8)
            let done = try #require(log.split(separator: "\n").last { $0.contains("final model written") }, "\(p.name) wrote no final model")
            #expect(try logField("accuracy", String(done)) >= 0.93, "\(p.name): \(done)")
            let (m, line) = try pushSumFinalMass(p)
            total += m
            discarded += try logField("mass_discarded", line)
            #expect(try logField("mass_unconfirmed", line) == 0 && logField("mass_lost", line) == 0, "\(p.name): \(line)")
            rows += 375
        }
        #expect(abs(total + discarded - rows) / rows <= 1e-6, "final masses \(total) + discarded \(discarded), rows \(rows)")
    }
}
