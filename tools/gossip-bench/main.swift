// gossip-bench: one executable, one suite per area. Each suite measures its own baseline in
// the same run and prints `key: value` lines. Run with `swift run -c release gossip-bench SUITE`.
import Foundation

/// Writes a diagnostic line to stderr.
func warn(_ s: String) { FileHandle.standardError.write(Data((s + "\n").utf8)) }

let suites: [(name: String, summary: String, run: ([String]) throws -> Void)] = [
    ("wire", "frame encode/decode vs memcpy, zlib ratio with and without byte-shuffle", runWireSuite),
    ("net", "RPC exchange over 127.0.0.1 vs a plain TCP echo, peak RSS", runNetSuite),
    ("train", "MLP training samples/s vs numpy, averaging vs memcpy", runTrainSuite),
]

let args = Array(CommandLine.arguments.dropFirst())
guard let name = args.first, let suite = suites.first(where: { $0.name == name }) else {
    var usage = "usage: gossip-bench SUITE [options]\n\nsuites:\n"
    for s in suites { usage += "  \(s.name)\t\(s.summary)\n" }
    warn(usage)
    exit(args.isEmpty || args.first == "--help" || args.first == "-h" ? 0 : 64)
}
do {
    try suite.run(Array(args.dropFirst()))
} catch {
    warn("gossip-bench \(name): \(error)")
    exit(1)
}
