// End-to-end: a network without --rounds ends by itself (SPEC §5.9). Real gossipd processes,
// encrypted; `gossipctl wait --converged` for each peer; final models checked here on the
// held-out rows; a late peer joins the finished network and adopts its final model.
import Foundation
import GossipML
import GossipNet
@testable import GossipNode
import GossipWire
import Testing

@Suite(.serialized)
struct ConvergenceEndTests {
    /// Bootstrap + 4 peers on digits (64,256,128,10), no --rounds: every peer exits 0 by itself
    /// (one keeps serving with --serve-when-done), every final.safetensors >= 93% held out and
    /// within 0.5% relative L2 of the others, every `gossipctl wait --converged` returns 0.
    /// Then a fifth peer joins the finished network, adopts the final model and exits 0.
    /// Windows of 10 rounds (`--converge-window`, half the default): the same detector, judged
    /// twice as often.
    @Test func aNetworkWithoutRoundsEndsByItself() throws {
        let c = try Cluster("converge-end", secure: true)
        defer { c.shutdown() }
        let boot = try c.bootstrap(arch: "64,256,128,10")
        var peers: [NodeProcess] = []
        var dirs: [String] = []
        let started = Date()
        for i in 0..<4 {
            let dir = "\(c.dir)/state\(i)"
            dirs.append(dir)
            var extra = ["--bootstrap", boot.endpoint.description, "--state-dir", dir, "--log-level", "notice", "--converge-window", "10"]
            if i == 0 { extra.append("--serve-when-done") }
            peers.append(try c.peer(extra, shard: "\(i)/4", training: Cluster.tuned, converge: true))
        }
        // One `gossipctl wait --converged` per peer, started while they train. Their output
        // goes to files (no pipe of this process stays open while they wait: other suites
        // count this process's descriptors).
        let waitTimeout = 240.0
        var waits: [(Process, String)] = []
        for (i, p) in peers.enumerated() {
            let proc = Process()
            proc.executableURL = URL(fileURLWithPath: Cluster.binary("gossipctl"))
            proc.arguments = ["--endpoint", p.endpoint.description] + c.keyArgs
                + ["--timeout", "\(Int(waitTimeout))", "-o", "json", "wait", "--converged"]
            let out = "\(c.dir)/wait\(i).out"
            FileManager.default.createFile(atPath: out, contents: nil)
            let fh = try FileHandle(forWritingTo: URL(fileURLWithPath: out))
            proc.standardOutput = fh
            proc.standardError = fh
            proc.standardInput = FileHandle.nullDevice
            try proc.run()
            try? fh.close()
            waits.append((proc, out))
        }
        defer { for (w, _) in waits where w.isRunning { kill(w.processIdentifier, SIGKILL); w.waitUntilExit() } }
        // The three without --serve-when-done exit by themselves, with status 0.
        try c.wait("peers 1-3 exit by themselves", timeout: waitTimeout, nodes: peers) {
            peers[1...].allSatisfy { !$0.process.isRunning }
        }
        for p in peers[1...] {
            #expect(p.process.terminationStatus == 0, "\(p.name) exited \(p.process.terminationStatus):\n\(p.logTail)")
        }
        try c.wait("peer 0 is done and serving", timeout: 60, nodes: [peers[0]]) {
            try c.status(peers[0]).phase == "done"
        }
        let elapsed = Date().timeIntervalSince(started)
        try c.wait("every gossipctl wait returns", timeout: 30) { waits.allSatisfy { !$0.0.isRunning } }
        for (i, (w, out)) in waits.enumerated() {
            let text = (try? String(contentsOfFile: out, encoding: .utf8)) ?? ""
            #expect(w.terminationStatus == 0, "gossipctl wait for peer \(i) exited \(w.terminationStatus): \(text)")
            let line = text.split(separator: "\n").first { $0.hasPrefix("{") }.map(String.init) ?? ""
            if let res = try? WaitConvergedResult(json: line) {
                #expect(res.finalModel == dirs[i] + "/final.safetensors")
                #expect(res.phase == (i == 0 ? "done" : "stopping"))
            } else {
                Issue.record("gossipctl wait for peer \(i) printed no result: \(text)")
            }
        }
        // The final models, judged here.
        let split = try DatasetSource.digits.load()
        let finals = try dirs.map { try SafeTensors.read(path: $0 + "/final.safetensors") }
        for (i, f) in finals.enumerated() {
            let arch = try MLPArchitecture(parsing: try #require(f.metadata["arch"]))
            let acc = evaluate(architecture: arch, parameters: f.parameters, on: split.test).accuracy
            #expect(acc >= 0.93, "peer \(i) final accuracy \(acc)")
            #expect(f.metadata["final"] == "true")
        }
        var worst = 0.0
        for i in 0..<4 { for j in (i + 1)..<4 { worst = max(worst, Averaging.relativeL2Distance(finals[i].parameters, finals[j].parameters)) } }
        #expect(worst <= 0.005, "final models differ by \(worst) relative L2")
        let st = try c.status(peers[0])
        let conv = try #require(st.convergence)
        #expect(conv.finished && conv.enabled)
        #expect(conv.votesCounted >= conv.votesNeeded)
        print("convergence e2e: 4 peers finished in \(String(format: "%.1f", elapsed)) s, worst final spread \(worst), rounds \(st.round), lr \(conv.learningRate)")

        // A late peer joins the finished network: it adopts peer 0's final model and exits 0.
        let lateDir = "\(c.dir)/state-late"
        let late = try c.peer(["--bootstrap", boot.endpoint.description, "--join", peers[0].endpoint.description,
                               "--state-dir", lateDir, "--log-level", "notice", "--converge-window", "10"],
                              shard: "1/4", training: Cluster.tuned, converge: true)
        try c.wait("the late peer exits by itself", timeout: 90, nodes: [late, peers[0]]) { !late.process.isRunning }
        #expect(late.process.terminationStatus == 0, "late peer exited \(late.process.terminationStatus):\n\(late.logTail)")
        let lateFinal = try SafeTensors.read(path: lateDir + "/final.safetensors")
        #expect(lateFinal.metadata["final_source"] == "adopted from \(peers[0].endpoint)")
        #expect(Averaging.relativeL2Distance(lateFinal.parameters, finals[0].parameters) <= 1e-6)
        // The serving peer's final model did not change, and it stops cleanly.
        #expect(Averaging.relativeL2Distance(try c.model(peers[0]), finals[0].parameters) <= 1e-6)
        let (code, _, err) = try c.ctl(peers[0].socketArgs + ["stop"])
        #expect(code == 0, "stop: \(err)")
        try c.wait("peer 0 stops", timeout: 30, nodes: [peers[0]]) { !peers[0].process.isRunning }
        #expect(peers[0].process.terminationStatus == 0)
    }

    /// `gossipctl wait --converged` against a peer that cannot finish in time (--no-converge)
    /// exits 3, and against nothing at all 69.
    @Test func waitTimesOutWithExitCode3() throws {
        let c = try Cluster("converge-wait", secure: true)
        defer { c.shutdown() }
        let boot = try c.bootstrap()
        let p = try c.peer(["--bootstrap", boot.endpoint.description], shard: "0/1")
        let (code, out, err) = try c.ctl(["--endpoint", p.endpoint.description] + c.keyArgs
                                         + ["--timeout", "1", "-o", "json", "wait", "--converged"])
        #expect(code == 3, "exit \(code): \(out) \(err)")
        #expect(out.contains(#""exit_code":3"#))
        #expect(out.contains("DEADLINE_EXCEEDED"))
        let (usage, _, _) = try c.ctl(["--endpoint", p.endpoint.description] + c.keyArgs + ["wait"])
        #expect(usage == 64)
        let (down, _, _) = try c.ctl(["--endpoint", "127.0.0.1:1", "--timeout", "1", "wait", "--converged"])
        #expect(down == 69)
    }
}
