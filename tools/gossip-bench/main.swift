// gossip-bench: benchmark and check suites. `gossip-bench <suite> [options]`.
//
// Each suite lives in its own file (TrainSuite.swift; WireSuite.swift and NetSuite.swift
// to come) and is dispatched from here. Exit codes: 0 ok, 1 failure, 2 not implemented, 64 usage.

import Foundation

/// Monotonic time in seconds.
func now() -> Double { Double(DispatchTime.now().uptimeNanoseconds) / 1e9 }

/// Writes a diagnostic line to stderr.
func warn(_ s: String) { FileHandle.standardError.write(Data((s + "\n").utf8)) }

let usage = """
usage: gossip-bench <suite> [options]
suites:
  train                       training and averaging throughput (vs numpy, vs memcpy)
  train-accuracy [options]    train centrally and report test accuracy
      --dataset SRC (digits | mnist:DIR | fashion-mnist:DIR | csv:FILE)  --arch A
      --epochs E  --lr LR  --momentum M  --weight-decay WD  --batch B  --seed S  --noise SIGMA  --out FILE.safetensors
      --schedule step|cosine|none  --min-lr-frac F (cosine floor)  --shift PIXELS
      --holdout N (validate on the last N training rows instead of the test rows)
  gossip-sim [options]        n peers on IID shards in one process: K local steps, then random pairwise averaging
      --peers N  --rounds R  --local-steps K  --non-iid-alpha A  --eval-every E  and the train-accuracy options
      (--schedule cosine|none; cosine spans R*K steps)
  export-digits OUT [--epochs E]  train on the bundled digits, export safetensors, print accuracy
  wire                        wire encode/decode throughput 
  net                         exchange over sockets 
"""

let arguments = Array(CommandLine.arguments.dropFirst())
guard let suite = arguments.first else {
    FileHandle.standardError.write(Data((usage + "\n").utf8))
    exit(64)
}
let rest = Array(arguments.dropFirst())
switch suite {
case "train":
    exit(runTrainSuite(rest))
case "train-accuracy":
    exit(runTrainAccuracySuite(rest))
case "gossip-sim":
    exit(runGossipSimSuite(rest))
case "export-digits":
    exit(runExportDigitsSuite(rest))
case "wire", "net":
    do {
        try (suite == "wire" ? runWireSuite : runNetSuite)(rest)
        exit(0)
    } catch {
        warn("gossip-bench \(suite): \(error)")
        exit(1)
    }
case "-h", "--help", "help":
    print(usage)
    exit(0)
default:
    FileHandle.standardError.write(Data("gossip-bench: unknown suite '\(suite)'\n\(usage)\n".utf8))
    exit(64)
}
