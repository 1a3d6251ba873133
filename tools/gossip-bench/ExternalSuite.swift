// The `external` suite (SPEC §5.12, issue 14): one pull plus one push of a 10M-parameter
// model through a real node's control socket, against writing and reading the same
// safetensors file once each (measured in the same run).
//
// Set-up: a real gossipd bootstrap serving an external model of 10M float32 parameters (one
// table of 4 tensors) and one `gossipd peer --trainer external` with a control socket, both
// child processes. What is timed (best of --reps):
// - `external_roundtrip_10M_ms`: `Control.pull(to:)` (the node writes the file itself) plus
//   `Control.push(from:)` (the node reads it, matches the tensors by name, checks them,
//   applies pushed - pulled to its model and keeps the new version), each a request on the
//   node's control socket, waited for.
// - `external_baseline_write_read_10M_ms`: `SafeTensors.write` (the same atomic writer, with
//   fsync) plus `SafeTensors.read` of the same model, in this process.
// - `external_roundtrip_vs_baseline`: their ratio (target <= 4).
// - `external_roundtrip_inline_10M_ms`: the same round trip with the model copied through the
//   socket (gossipctl --inline), for comparison.
import Foundation
import GossipML
import GossipNode

func runExternalSuite(reps: Int) throws {
    let gossipd = try locateGossipd()
    let dir = NSTemporaryDirectory() + "gossip-bench-external-\(getpid())"
    try? FileManager.default.removeItem(atPath: dir)
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    var procs: [Process] = []
    defer {
        for p in procs where p.isRunning { kill(p.processIdentifier, SIGKILL) }
        for p in procs { p.waitUntilExit() }
        try? FileManager.default.removeItem(atPath: dir)
    }
    // 10M parameters: 2500 x 4000 and its bias, plus a second layer (10,000,000 + 2,500 + ...).
    let table: [(name: String, shape: [Int])] = [("layers.0.weight", [2500, 3996]), ("layers.0.bias", [2500]),
                                                 ("head.weight", [10, 750]), ("head.bias", [10])]
    var model = ParameterSet(specs: table)
    for k in 0..<model.parameterCount { model.storage[k] = Float(k % 1000) * 1e-4 - 0.05 }
    let count = model.parameterCount
    let initial = dir + "/initial.safetensors"
    try SafeTensors.write(model, metadata: [:], to: initial)
    let boot = try spawnLogged(gossipd, ["bootstrap", "--exit-with-parent", "--listen", "127.0.0.1:0", "--model", initial,
                                         "--ready-file", dir + "/boot.ready", "--log-level", "warning"], log: dir + "/boot.log")
    procs.append(boot)
    let bootEP = try waitReadyFile(dir + "/boot.ready", what: "bootstrap", process: boot, log: dir + "/boot.log", until: now() + 120)
    let socket = dir + "/peer.sock"
    let peer = try spawnLogged(gossipd, ["peer", "--exit-with-parent", "--listen", "127.0.0.1:0", "--bootstrap", bootEP,
                                         "--trainer", "external", "--control-socket", socket,
                                         "--ready-file", dir + "/peer.ready", "--log-level", "warning"], log: dir + "/peer.log")
    procs.append(peer)
    _ = try waitReadyFile(dir + "/peer.ready", what: "external peer", process: peer, log: dir + "/peer.log", until: now() + 120)
    let c = Control(socketPath: socket, timeout: .seconds(120))
    let pulled = dir + "/pulled.safetensors", trained = dir + "/trained.safetensors"

    func roundTrip(inline: Bool) throws -> Double {
        var best = Double.infinity
        for _ in 0..<reps {
            // The trainer's file to push (not timed): last round's pull, one weight changed.
            let t0 = now()
            let p = try c.pull(to: pulled, inline: inline)
            let t1 = now()
            var (w, _) = try SafeTensors.read(path: pulled)
            w.storage[0] += 1e-3
            try SafeTensors.write(w, metadata: [:], to: trained)
            let t2 = now()
            _ = try c.push(from: trained, version: p.version, samples: 128, steps: 1, inline: inline)
            let t3 = now()
            best = min(best, (t1 - t0) + (t3 - t2))
        }
        return best
    }
    let direct = try roundTrip(inline: false)
    let viaSocket = try roundTrip(inline: true)
    var baseline = Double.infinity
    for _ in 0..<reps {
        let t0 = now()
        try SafeTensors.write(model, metadata: [:], to: dir + "/baseline.safetensors")
        _ = try SafeTensors.read(path: dir + "/baseline.safetensors")
        baseline = min(baseline, now() - t0)
    }
    out("external_parameters: \(count)")
    out("external_roundtrip_10M_ms: \(String(format: "%.1f", direct * 1000))")
    out("external_baseline_write_read_10M_ms: \(String(format: "%.1f", baseline * 1000))")
    out("external_roundtrip_vs_baseline: \(String(format: "%.2f", direct / baseline))")
    out("external_roundtrip_inline_10M_ms: \(String(format: "%.1f", viaSocket * 1000))")
}
