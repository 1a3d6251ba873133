// The `link` suite (issue 13): two real gossipd peers in two network namespaces joined by a
// veth pair whose both ends are rate-limited with `tc qdisc ... tbf rate R burst 256kb latency
// 50ms` (this kernel has tbf, not netem), and the time of one 10M-parameter exchange for each
// encoding and rate.
//
// Setup (needs root, `ip` and `tc`; skipped with a message otherwise, and always cleaned up):
// namespaces gsl<pid>a and gsl<pid>b, veth gsl<pid>a <-> gsl<pid>b with 10.213.<k>.1/24 and
// .2/24. In b: a bootstrap (--arch, default 64,1024,9600,10 = 10,002,570 parameters, 40.0 MB
// of float32) and peer B; in a: peer A. Plaintext (--insecure: a network key would add the
// AEAD's cost to both ends, which is not what this measures). Both peers train 1 step of
// batch 8 per round, so the CPU stays free for the exchange; B paces its rounds an hour apart
// so nearly every exchange is one A started, and while an exchange runs neither side trains
// (A waits for the reply, B holds its exchange slot).
//
// Measured: A's metrics log (`--metrics-file`) records the wall time of every exchange A
// started (Reserve, request, the average at B, reply). The first OK exchange is dropped (it
// opens the connection and allocates buffers); the figure is the median of the next `repeat`.
// Bytes on the wire per exchange: A's status `bytes_in + bytes_out` (gossipctl status, run in
// namespace a) between the first and the last measured exchange, over the exchanges A
// completed meanwhile (frame bytes; TCP/IP headers not counted).
//
// Keys: `exchange_10M_<enc>_<rate>_s`, `bytes_per_exchange_<enc>_<rate>`, and the ratios
// `exchange_10M_bf16_vs_f32_100mbit`, `exchange_10M_int8_vs_f32_100mbit` (and
// `exchange_10M_zlib_shuffle_vs_f32_100mbit`). Encodings that need `--wire-dtype` (issue 13
// item 1) print `n/a (needs --wire-dtype)` when this gossipd lacks the option.
import Foundation
import ArgumentParser
import GossipNode
#if canImport(Glibc)
import Glibc
#endif

struct LinkOptions {
    var rates = ["100mbit", "1gbit"]
    var encodings = ["f32", "f32_zlib_shuffle", "bf16", "bf16_zlib", "int8"]
    var arch = "64,1024,9600,10"
    var repeats = 3
    var timeoutPerRun = 300.0
}

/// One encoding: the peer options it takes.
private func encodingArgs(_ enc: String) -> (args: [String], needsDtype: Bool)? {
    switch enc {
    case "f32": return (["--compression", "none"], false)
    case "f32_zlib_shuffle": return (["--compression", "zlib-shuffle"], false)
    case "f32_auto": return (["--compression", "auto"], false)
    case "bf16": return (["--compression", "none", "--wire-dtype", "bf16"], true)
    case "bf16_zlib": return (["--compression", "zlib-shuffle", "--wire-dtype", "bf16"], true)
    case "fp16": return (["--compression", "none", "--wire-dtype", "fp16"], true)
    case "int8": return (["--compression", "none", "--wire-dtype", "int8"], true)
    default: return nil
    }
}

let linkEncodings = ["f32", "f32_zlib_shuffle", "f32_auto", "bf16", "bf16_zlib", "fp16", "int8"]

/// Runs a command to completion; returns (status, stdout + stderr).
@discardableResult
private func sh(_ args: [String]) -> (Int32, String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    p.arguments = args
    let pipe = Pipe()
    p.standardOutput = pipe
    p.standardError = pipe
    p.standardInput = FileHandle.nullDevice
    do { try p.run() } catch { return (127, "\(error)") }
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return (p.terminationStatus, String(decoding: data, as: UTF8.self))
}

/// The two namespaces and the veth between them; `close()` removes everything.
private final class LinkNamespaces {
    let a: String, b: String
    let addrA: String, addrB: String
    private var made: [String] = []

    init() throws {
        let id = getpid() % 100_000
        a = "gsl\(id)a"
        b = "gsl\(id)b"
        let k = Int(id % 200) + 20
        addrA = "10.213.\(k).1"
        addrB = "10.213.\(k).2"
        guard geteuid() == 0 else { throw BenchError("needs root to make network namespaces (run as root)") }
        for tool in ["ip", "tc"] where sh(["which", tool]).0 != 0 {
            throw BenchError("`\(tool)` is not installed (iproute2)")
        }
        try run(["ip", "netns", "add", a]); made.append(a)
        try run(["ip", "netns", "add", b]); made.append(b)
        try run(["ip", "link", "add", a, "netns", a, "type", "veth", "peer", "name", b, "netns", b])
        try run(["ip", "-n", a, "addr", "add", addrA + "/24", "dev", a])
        try run(["ip", "-n", b, "addr", "add", addrB + "/24", "dev", b])
        for (ns, dev) in [(a, a), (b, b)] {
            try run(["ip", "-n", ns, "link", "set", "lo", "up"])
            try run(["ip", "-n", ns, "link", "set", dev, "up"])
        }
    }

    /// `tc qdisc replace dev X root tbf rate R burst 256kb latency 50ms` on both ends.
    func shape(_ rate: String) throws {
        for (ns, dev) in [(a, a), (b, b)] {
            try run(["ip", "netns", "exec", ns, "tc", "qdisc", "replace", "dev", dev, "root", "tbf",
                     "rate", rate, "burst", "256kb", "latency", "50ms"])
        }
    }

    func close() {
        for ns in made.reversed() { sh(["ip", "netns", "del", ns]) }   // deleting a namespace deletes its veth end
        made = []
    }

    deinit { close() }

    private func run(_ args: [String]) throws {
        let (rc, text) = sh(args)
        guard rc == 0 else { throw BenchError("`\(args.joined(separator: " "))` failed (\(rc)): \(text.trimmingCharacters(in: .whitespacesAndNewlines))") }
    }
}

private struct LinkRow {
    var seconds: Double
    var bytesPerExchange: Double?
}

func runLinkSuite(_ o: LinkOptions) throws {
    let gossipd = try locateGossipd()
    let gossipctl = URL(fileURLWithPath: gossipd).deletingLastPathComponent().appendingPathComponent("gossipctl").path
    let params = try modelBytes(o.arch) / 4
    out("# link: two gossipd peers in network namespaces joined by a veth pair, tbf rate R burst 256kb latency 50ms on both ends")
    out("# one exchange = Reserve + request (model) + average + reply (model); median of \(o.repeats) after one warm-up")
    out("arch: \(o.arch)")
    out("parameters: \(params)")
    let peerHelp = sh([gossipd, "peer", "--help"]).1
    let hasDtype = peerHelp.contains("--wire-dtype")
    let ns: LinkNamespaces
    do { ns = try LinkNamespaces() } catch {
        out("link: skipped: cannot make network namespaces: \(error)")
        return
    }
    defer { ns.close() }
    var results: [String: Double] = [:]
    for rate in o.rates {
        try ns.shape(rate)
        for enc in o.encodings {
            guard let (args, needsDtype) = encodingArgs(enc) else { throw BenchError("unknown encoding \(enc)") }
            let key = "exchange_10M_\(enc)_\(rate)_s"
            if needsDtype && !hasDtype {
                out("\(key): n/a (needs --wire-dtype)")
                continue
            }
            let row = try runLinkPair(ns: ns, gossipd: gossipd, gossipctl: gossipctl, arch: o.arch, peerArgs: args,
                                      repeats: o.repeats, timeout: o.timeoutPerRun, label: "\(enc) at \(rate)")
            results["\(enc)_\(rate)"] = row.seconds
            out("\(key): \(String(format: "%.3f", row.seconds))")
            if let b = row.bytesPerExchange { out("bytes_per_exchange_\(enc)_\(rate): \(Int(b))") }
        }
    }
    for rate in o.rates {
        guard let base = results["f32_\(rate)"] else { continue }
        for enc in ["bf16", "int8", "f32_zlib_shuffle", "bf16_zlib", "f32_auto"] {
            let name = enc == "f32_zlib_shuffle" ? "zlib_shuffle" : enc
            if let t = results["\(enc)_\(rate)"] {
                out("exchange_10M_\(name)_vs_f32_\(rate): \(String(format: "%.3f", t / base))")
            } else if o.encodings.contains(enc), encodingArgs(enc)?.needsDtype == true, !hasDtype {
                out("exchange_10M_\(name)_vs_f32_\(rate): n/a (needs --wire-dtype)")
            }
        }
    }
}

/// Starts bootstrap + B in namespace b and A in namespace a, measures, stops them.
private func runLinkPair(ns: LinkNamespaces, gossipd: String, gossipctl: String, arch: String, peerArgs: [String],
                         repeats: Int, timeout: Double, label: String) throws -> LinkRow {
    let dir = NSTemporaryDirectory() + "gossip-link-\(getpid())-\(UUID().uuidString.prefix(8))"
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    var procs: [Process] = []
    defer {
        for p in procs where p.isRunning { kill(p.processIdentifier, SIGKILL) }
        for p in procs { p.waitUntilExit() }
        try? FileManager.default.removeItem(atPath: dir)
    }
    let deadline = now() + timeout
    func spawn(_ nsName: String, _ args: [String], log: String) throws -> Process {
        let p = try spawnLogged("/usr/bin/env", ["ip", "netns", "exec", nsName, gossipd] + args, log: log)
        procs.append(p)
        return p
    }
    let common = ["--exit-with-parent", "--insecure", "--log-level", "warning"]
    let boot = try spawn(ns.b, ["bootstrap", "--listen", "\(ns.addrB):7400", "--arch", arch, "--seed", "1",
                                "--ready-file", dir + "/boot.ready"] + common, log: dir + "/boot.log")
    _ = try waitReadyFile(dir + "/boot.ready", what: "bootstrap (\(label))", process: boot, log: dir + "/boot.log", until: deadline)
    let peerCommon = ["--bootstrap", "\(ns.addrB):7400", "--dataset", "digits", "--local-steps", "1", "--batch", "8",
                      "--exchange-timeout", "120", "--no-converge", "--eval-every", "1000000"] + common + peerArgs
    let b = try spawn(ns.b, ["peer", "--listen", "\(ns.addrB):7401", "--shard", "1/2", "--pace-ms", "3600000",
                             "--ready-file", dir + "/b.ready"] + peerCommon, log: dir + "/b.log")
    _ = try waitReadyFile(dir + "/b.ready", what: "peer B (\(label))", process: b, log: dir + "/b.log", until: deadline)
    let metrics = dir + "/a.metrics.jsonl"
    let a = try spawn(ns.a, ["peer", "--listen", "\(ns.addrA):7402", "--shard", "0/2", "--metrics-file", metrics,
                             "--ready-file", dir + "/a.ready"] + peerCommon, log: dir + "/a.log")
    _ = try waitReadyFile(dir + "/a.ready", what: "peer A (\(label))", process: a, log: dir + "/a.log", until: deadline)

    func okExchanges() -> [Double] {
        guard let text = try? String(contentsOfFile: metrics, encoding: .utf8) else { return [] }
        var out: [Double] = []
        for line in text.split(separator: "\n") {
            guard let o = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                  o["event"] as? String == "exchange", o["outcome"] as? String == "ok",
                  let s = o["seconds"] as? Double else { continue }
            out.append(s)
        }
        return out
    }
    func traffic() -> (bytes: Int, done: Int)? {
        let (rc, text) = sh(["ip", "netns", "exec", ns.a, gossipctl, "status", "--endpoint", "\(ns.addrA):7402", "--output", "json"])
        guard rc == 0, let o = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any],
              let bin = o["bytes_in"] as? Int, let bout = o["bytes_out"] as? Int,
              let ex = o["exchanges"] as? [String: Any], let done = ex["done"] as? Int else { return nil }
        return (bin + bout, done)
    }
    var first: (bytes: Int, done: Int)?
    while true {
        let done = okExchanges()
        if first == nil, done.count >= 1 { first = traffic() }
        if done.count >= repeats + 1 { break }
        guard now() < deadline else {
            throw BenchError("\(label): only \(done.count) of \(repeats + 1) exchanges finished within \(Int(timeout)) s; see \(dir)/a.log")
        }
        for (p, name) in [(a, "peer A"), (b, "peer B")] where !p.isRunning {
            let tail = ((try? String(contentsOfFile: dir + (p === a ? "/a.log" : "/b.log"), encoding: .utf8)) ?? "").split(separator: "\n").suffix(3).joined(separator: " | ")
            throw BenchError("\(label): \(name) exited with status \(p.terminationStatus): \(tail)")
        }
        Thread.sleep(forTimeInterval: 0.1)
    }
    let last = traffic()
    let times = Array(okExchanges().dropFirst().prefix(repeats)).sorted()
    var row = LinkRow(seconds: times[times.count / 2])
    if let f = first, let l = last, l.done > f.done {
        row.bytesPerExchange = Double(l.bytes - f.bytes) / Double(l.done - f.done)
    }
    return row
}

struct Link: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "link",
        abstract: "A 10M-parameter exchange between two gossipd peers in network namespaces over a tbf rate-limited veth link, per encoding and rate.",
        discussion: "Needs root, ip and tc (skipped with a message otherwise). Prints exchange_10M_<enc>_<rate>_s (median of --repeat after a warm-up), bytes_per_exchange_<enc>_<rate>, and exchange_10M_bf16_vs_f32_100mbit, exchange_10M_int8_vs_f32_100mbit. Encodings: \(linkEncodings.joined(separator: ", ")) (the dtype ones need gossipd's --wire-dtype).")
    @Option(help: "Rates (tc tbf syntax), comma-separated.") var rates: String = "100mbit,1gbit"
    @Option(help: "Encodings, comma-separated.") var encodings: String = "f32,f32_zlib_shuffle,bf16,bf16_zlib,int8"
    @Option(help: "Model architecture (default 10,002,570 parameters).") var arch: String = "64,1024,9600,10"
    @Option(name: .customLong("repeat"), help: "Exchanges measured per row (median), after one warm-up.") var repeats: Int = 3
    @Option(name: .customLong("timeout-s"), help: "Seconds allowed per row.") var timeout: Double = 300

    func run() throws {
        var o = LinkOptions()
        o.rates = rates.split(separator: ",").map(String.init)
        o.encodings = encodings.split(separator: ",").map(String.init)
        for e in o.encodings where !linkEncodings.contains(e) {
            throw ValidationError("--encodings: unknown '\(e)'; use \(linkEncodings.joined(separator: ", "))")
        }
        guard !o.rates.isEmpty, o.rates.allSatisfy({ $0.range(of: "^[0-9]+(kbit|mbit|gbit)$", options: .regularExpression) != nil }) else {
            throw ValidationError("--rates: use values like 100mbit,1gbit")
        }
        guard (1...15).contains(repeats), timeout > 0 else { throw ValidationError("--repeat must be within 1...15 and --timeout-s positive") }
        o.arch = arch
        o.repeats = repeats
        o.timeoutPerRun = timeout
        do { try runLinkSuite(o) } catch { throw fail("link: \(error)") }
    }
}
