// Defaults that work (issue 10, item 6): a bootstrap without --arch suggests the dataset's
// architecture, a peer without training options takes the dataset's (the demo's recipe, but
// flat out), and --help says so.
import Foundation
import GossipNet
@testable import GossipNode
import Testing

@Suite struct DefaultsTests {
    @Test func bootstrapSuggestsArchitectureAndPeerTakesDatasetDefaults() throws {
        let c = try Cluster("defaults", secure: true)
        defer { c.shutdown() }
        let boot = try c.start(["bootstrap", "--listen", "127.0.0.1:0", "--log-level", "info"])
        #expect(try c.status(boot).architecture == "64,256,128,10")
        #expect(((try? String(contentsOfFile: boot.log, encoding: .utf8)) ?? "").contains("architecture 64,256,128,10 (suggested for --dataset digits"))
        // No --lr/--batch/--local-steps/--input-noise/--pace-ms: the digits defaults, pace 0.
        let p = try c.start(["peer", "--listen", "127.0.0.1:0", "--bootstrap", boot.endpoint.description, "--dataset", "digits",
                             "--rounds", "6", "--eval-every", "3", "--log-level", "info"])
        try c.wait("the peer to finish 6 rounds", timeout: 90, nodes: [p]) { try c.status(p).round >= 6 }
        let s = try c.status(p)
        #expect(s.architecture == "64,256,128,10")
        // 6 rounds of the default 10 local steps.
        #expect(s.step == 60)
        // lr 0.2 on batch 128: after 60 steps already well above chance (the old defaults,
        // lr 0.05 batch 64, are also above chance; the log line pins the values).
        #expect((s.accuracy ?? 0) > 0.5)
        let log = (try? String(contentsOfFile: p.log, encoding: .utf8)) ?? ""
        #expect(log.contains("batch=128 input_noise=0.4 local_steps=10 lr=0.2 pace_ms=0"), "\(p.logTail)")

        // Given options win over the dataset's.
        let q = try c.start(["peer", "--listen", "127.0.0.1:0", "--bootstrap", boot.endpoint.description, "--dataset", "digits",
                             "--lr", "0.1", "--local-steps", "4", "--rounds", "2", "--log-level", "info"])
        try c.wait("the second peer to finish 2 rounds", timeout: 90, nodes: [q]) { try c.status(q).round >= 2 }
        #expect(try c.status(q).step == 8)
        let qlog = (try? String(contentsOfFile: q.log, encoding: .utf8)) ?? ""
        #expect(qlog.contains("batch=128 input_noise=0.4 local_steps=4 lr=0.1 pace_ms=0"), "\(q.logTail)")
    }

    @Test func bootstrapForImagesAndUsageErrors() throws {
        let c = try Cluster("defaults-img")
        defer { c.shutdown() }
        // The MNIST suggestion does not read the files (this folder is empty) ...
        let empty = c.dir + "/no-idx-files"
        try FileManager.default.createDirectory(atPath: empty, withIntermediateDirectories: true)
        let boot = try c.start(["bootstrap", "--listen", "127.0.0.1:0", "--dataset", "mnist:" + empty])
        #expect(try c.status(boot).architecture == "784,256,128,10")
        // ... but a folder that is not there is a usage error naming it.
        let (s0, _, err0) = try Cluster.run(Cluster.binary("gossipd"), ["bootstrap", "--listen", "127.0.0.1:0", "--dataset", "mnist:/nonexistent"])
        #expect(s0 == 64, "\(err0)")
        #expect(err0.contains("/nonexistent is not a folder"), "\(err0)")
        let (status, _, err) = try Cluster.run(Cluster.binary("gossipd"), ["bootstrap", "--arch", "64,10", "--dataset", "digits"])
        #expect(status == 64, "\(err)")
        let (s2, _, err2) = try Cluster.run(Cluster.binary("gossipd"), ["bootstrap", "--arch", "64,10", "--model", "x.safetensors"])
        #expect(s2 == 64, "\(err2)")
    }

    @Test func helpStatesTheDefaults() throws {
        let (status, out, _) = try Cluster.run(Cluster.binary("gossipd"), ["peer", "--help"])
        #expect(status == 0)
        let flat = out.split(whereSeparator: \.isWhitespace).joined(separator: " ")
        #expect(flat.contains("digits (64 features): 64,256,128,10, lr 0.2, batch 128, 10 local steps, input noise 0.4"), "\(out)")
        #expect(flat.contains("784,256,128,10, lr 0.05, batch 64, 20 local steps"))
        #expect(flat.contains("default: 0, flat out"))
        let (s2, boot, _) = try Cluster.run(Cluster.binary("gossipd"), ["bootstrap", "--help"])
        #expect(s2 == 0)
        #expect(boot.split(whereSeparator: \.isWhitespace).joined(separator: " ").contains("digits: 64,256,128,10"))
    }
}
