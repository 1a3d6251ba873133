// The PyTorch example (examples/torch_cnn, README "External trainers with PyTorch") end to end,
// short: a bootstrap serving the CNN that init_model.py wrote with torch, two
// `gossipd peer --trainer external` nodes, and two trainer.py processes that pull, train a few
// Adam steps on their Fashion-MNIST shard and push. Checks the table torch wrote is what the
// nodes serve, that every pull/push round trip landed, that the models moved from the initial
// CNN, that the peers average to one model and that it learned (torch evaluates it). The
// 4-peer >= 90% run is `python3 examples/torch_cnn/run.py` (too long for CI).
//
// Skips with a message where python3 cannot `import torch, safetensors` (CI has no torch) or
// where the Fashion-MNIST files are missing (env FASHION_MNIST names their directory).
import Foundation
import GossipML
@testable import GossipNode
import Testing

/// The python3 (command prefix) that imports torch and safetensors, or nil (with the reason printed).
private func torchPython() -> [String]? {
    let python = ProcessInfo.processInfo.environment["PYTHON"].map { [$0] } ?? ["/usr/bin/env", "python3"]
    let r = try? Cluster.run(python[0], Array(python.dropFirst()) + ["-c", "import torch, safetensors.torch"], timeout: 120)
    guard let r, r.0 == 0 else {
        print("TorchExampleTests: skipped: \(python.joined(separator: " ")) cannot import torch and safetensors "
              + "(\(r.map { $0.2.split(separator: "\n").last.map(String.init) ?? "exit \($0.0)" } ?? "not runnable")); "
              + "install them as README \"External trainers with PyTorch\" says to run this test")
        return nil
    }
    return python
}

/// The directory with Fashion-MNIST's idx .gz files, or nil (with the reason printed).
private func fashionMNIST() -> String? {
    let dir = ProcessInfo.processInfo.environment["FASHION_MNIST"] ?? "/work/shared/data/fashion-mnist"
    let files = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    guard files.allSatisfy({ FileManager.default.fileExists(atPath: dir + "/" + $0) }) else {
        print("TorchExampleTests: skipped: Fashion-MNIST not found in \(dir) (set FASHION_MNIST to the directory holding \(files[0]), ...)")
        return nil
    }
    return dir
}

@Suite(.serialized)
struct TorchExampleTests {
    /// The tensor table of examples/torch_cnn/cnn.py (its header documents it).
    static let table: [String: [Int]] = [
        "conv1.weight": [16, 1, 5, 5], "conv1.bias": [16], "conv2.weight": [32, 16, 3, 3], "conv2.bias": [32],
        "fc1.weight": [128, 1568], "fc1.bias": [128], "fc2.weight": [10, 128], "fc2.bias": [10],
    ]

    @Test func torchTrainersPullTrainPushAndAverage() throws {
        guard let python = torchPython(), let data = fashionMNIST() else { return }
        let example = Cluster.repoRoot + "/examples/torch_cnn/"
        let c = try Cluster("torch")
        defer { c.shutdown() }
        func py(_ args: [String], timeout: Double = 120) throws -> (Int32, String, String) {
            try Cluster.run(python[0], Array(python.dropFirst()) + args, timeout: timeout)
        }

        // torch writes the initial CNN; Swift's reader sees exactly the documented table.
        let initFile = c.dir + "/init.safetensors"
        let (ic, _, ierr) = try py([example + "init_model.py", "--out", initFile, "--seed", "0"])
        try #require(ic == 0, "init_model.py failed: \(ierr)")
        let (initial, meta) = try SafeTensors.read(path: initFile)
        #expect(Dictionary(uniqueKeysWithValues: initial.specs.map { ($0.name, $0.shape) }) == Self.table)
        #expect(meta["arch"] == nil, "no 'arch': the bootstrap serves the file as an external model")

        let boot = try c.start(["bootstrap", "--listen", "127.0.0.1:0", "--model", initFile, "--log-level", "info"])
        let peers = try (0..<2).map { _ in
            try c.start(["peer", "--listen", "127.0.0.1:0", "--bootstrap", boot.endpoint.description, "--trainer", "external",
                         "--exchange-timeout", "3", "--log-level", "info"])
        }
        #expect(try c.status(peers[0]).architecture == "external")

        // Two trainers at once, 3 rounds of 5 Adam steps each on shards 0/2 and 1/2.
        final class Results: @unchecked Sendable {
            let lock = NSLock()
            var list: [Int: (Int32, String, String)] = [:]
        }
        let results = Results()
        let group = DispatchGroup()
        let rounds = 3
        for (i, p) in peers.enumerated() {
            let args = Array(python.dropFirst()) + [example + "trainer.py", "--socket", p.controlSocket!, "--gossipctl", Cluster.binary("gossipctl"),
                        "--data", data, "--shard", "\(i)/2", "--rounds", "\(rounds)", "--steps", "5", "--lr", "0.002",
                        "--workdir", c.dir + "/trainer\(i)", "--timeout", "30"]
            DispatchQueue.global().async(group: group) {
                let r = (try? Cluster.run(python[0], args, timeout: 240)) ?? (-1, "", "trainer.py did not finish within 240 s")
                results.lock.withLock { results.list[i] = r }
            }
        }
        #expect(group.wait(timeout: .now() + 260) == .success, "the torch trainers did not finish")
        for i in peers.indices {
            let r = results.lock.withLock { results.list[i] }
            try #require(r?.0 == 0, "trainer \(i) failed (exit \(r?.0 ?? -1)): \(r?.2.suffix(800) ?? "")\n\(peers[i].logTail)")
            let last = r!.1.split(separator: "\n").last.map(String.init) ?? ""
            let summary = try #require(try JSONSerialization.jsonObject(with: Data(last.utf8)) as? [String: Any], "no summary: \(r!.1)")
            #expect((summary["rounds"] as? Int) == rounds, "trainer \(i): \(last)")
        }
        // Every round trip landed on its node.
        for p in peers {
            let ext = try #require(try c.status(p).external)
            #expect(ext.pushes >= rounds && ext.pulls >= rounds, "\(p.name): \(ext)")
        }
        // The peers average to one model (they gossip on their own), which moved from the initial CNN.
        try c.wait("the two external peers hold one model", timeout: 60, nodes: peers) { try c.spread(peers) < 1e-4 }
        let model = try c.model(peers[0])
        #expect(Dictionary(uniqueKeysWithValues: model.specs.map { ($0.name, $0.shape) }) == Self.table)
        var moved = 0.0, norm = 0.0
        for s in initial.specs {
            let before = initial.tensor(named: s.name)!, after = try #require(model.tensor(named: s.name))
            for (b, a) in zip(before, after) {
                moved += Double(a - b) * Double(a - b)
                norm += Double(b) * Double(b)
            }
        }
        #expect(model.allFinite && (moved / norm).squareRoot() > 1e-3, "the model barely moved: \((moved / norm).squareRoot())")
        // torch reads the node's model back and it has learned (chance is 10%).
        let final = c.dir + "/final.safetensors"
        let (pc, _, perr) = try c.ctl(peers[1].socketArgs + ["pull", "--out", final])
        try #require(pc == 0, "pull: \(perr)")
        let (ec, eout, eerr) = try py([example + "evaluate.py", "--model", final, "--data", data])
        try #require(ec == 0, "evaluate.py: \(eerr)")
        let acc = try #require((try JSONSerialization.jsonObject(with: Data(eout.utf8)) as? [String: Any])?["test_accuracy"] as? Double)
        print("TorchExampleTests: 2 peers x \(rounds) rounds x 5 steps: test accuracy \(acc)")
        #expect(acc > 0.4, "after 30 Adam steps the CNN should beat chance clearly: \(acc)")
    }
}
