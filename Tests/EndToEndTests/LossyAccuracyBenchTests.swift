// `gossip-bench lossy-accuracy` (README "Lossy wire encodings"): usage errors exit 64, and a
// tiny real run (2 peers, 2 rounds, one seed) prints every key with a value.
import Foundation
import Testing

@Suite struct LossyAccuracyBenchTests {
    private func bench(_ args: [String]) throws -> (Int32, String, String) {
        try Cluster.run(Cluster.binary("gossip-bench"), ["lossy-accuracy"] + args, timeout: 120)
    }

    @Test func usageErrorsExit64() throws {
        for bad in [["--encodings", "f32,bf17"], ["--encodings", "bf16,bf16"], ["--seeds", "0"], ["--peer-arg=--wire-dtype"],
                    ["--settle-s", "-1"]] {
            let (status, _, err) = try bench(bad)
            #expect(status == 64, "\(bad): \(err)")
            #expect(!err.isEmpty)
        }
    }

    @Test func aTinyRunPrintsEveryKey() throws {
        let (status, out, err) = try bench(["--encodings", "int8", "--seeds", "1", "--peers", "2", "--rounds", "2", "--settle-s", "0.5", "--each"])
        #expect(status == 0, "\(err)")
        let lines = Dictionary(out.split(separator: "\n").map { l -> (String, String) in
            let p = l.split(separator: ":", maxSplits: 1)
            return (String(p[0]), p.count > 1 ? p[1].trimmingCharacters(in: .whitespaces) : "")
        }, uniquingKeysWith: { a, _ in a })
        for k in ["lossy_acc_digits_f32_mean", "lossy_acc_digits_int8_mean", "lossy_acc_digits_f32_consensus",
                  "lossy_acc_digits_int8_consensus", "lossy_acc_digits_int8_vs_f32_points", "lossy_acc_digits_int8_vs_f32_se",
                  "lossy_acc_digits_f32_seed1", "lossy_acc_digits_int8_seed1"] {
            #expect(lines[k] != nil, "missing \(k) in\n\(out)")
        }
        // Two rounds on digits already beat chance by far; the figures are real evaluations.
        let acc = Double(lines["lossy_acc_digits_int8_mean"] ?? "") ?? 0
        #expect(acc > 50 && acc <= 100, "\(out)")
        #expect(lines["lossy_acc_digits_int8_vs_f32_se"] == "none")   // one seed: no standard error
    }
}
