// The `membership-scale` suite (issue 11 item 5): N (default 32) real `gossipd peer`
// processes on 127.0.0.1, plaintext, training a small model on digits at a pace the machine
// copes with, measured from the outside through each peer's Status (its `peers` list) over TCP.
//
// No bootstrap: peer 0 starts from an initial model written into its --state-dir; the other
// N-1 are launched at once, peer i with `--join` a random peer j < i (any live peer is a door;
// a tree rooted at peer 0, so every peer can get a model).
//
// 1. Join: `join_time_p50_s` / `join_time_p99_s` over the N peers: from the launch of the N-1
//    until the peer lists all N-1 others.
// 2. Kill K (default 8) at random (SIGKILL, all at the same instant): for every (killed
//    member, live observer) pair, the time until that observer stops listing it:
//    `detect_time_p50_s`, `_p99_s`, `_max_s` (pairs not detected within --detect-timeout-s
//    count as that timeout and are counted in `detect_undetected`); `detect_relisted` counts
//    pairs listed again after they were dropped (a dead member learned anew from others'
//    lists), `detect_still_listed` the pairs listed at the end, and `detect_all_gone_s` when
//    one sweep first found no killed member listed anywhere.
// 3. False evictions: once every live peer lists every other live peer, one live member is
//    frozen (SIGSTOP) for --freeze-s (meant to be below the suspicion timeout), then watched
//    for --settle-s; separately, one busy-loop process per core runs for --hog-s, then
//    --settle-s. `false_evictions` = live members that any live member stopped listing in
//    either phase (`false_evictions_freeze`, `false_evictions_hog` per phase).
// 4. `final_spread`: largest pairwise relative L2 distance of the live members' models, and
//    `accuracy_mean` of their last held-out evaluations (they train all along).
//
// Polling: one Status per peer every --poll-ms (a TCP connection per peer, kept): with 32
// peers at 500 ms that is 64 small requests per second. The resolution of every time printed
// is the poll interval plus one sweep over the peers.
import ArgumentParser
import Foundation
import GossipML
import GossipNet
import GossipNode
#if canImport(Glibc)
import Glibc
#endif

struct MembershipScaleOptions {
    var peers = 32
    var kill = 8
    var seed: UInt64 = 1
    var paceMs = 500
    var arch = "64,32,10"
    var freezeSeconds = 3.0
    var hogSeconds = 30.0
    var settleSeconds = 10.0
    var joinTimeout = 180.0
    var detectTimeout = 180.0
    var pollMs = 500
    var logLevel = "warning"
    var extra: [String] = []
    var keepDir = false
}

/// The p-th percentile (0...100) of `xs` by the nearest-rank method; nan when empty.
func percentile(_ xs: [Double], _ p: Double) -> Double {
    guard !xs.isEmpty else { return .nan }
    let s = xs.sorted()
    let rank = Int((p / 100 * Double(s.count)).rounded(.up))
    return s[min(max(rank, 1), s.count) - 1]
}

func fmt2(_ d: Double) -> String { d.isFinite ? String(format: "%.2f", d) : "nan" }

/// Runs the suite; prints `key: value` lines. Every process it starts is killed before it returns.
func runMembershipScaleSuite(_ o: MembershipScaleOptions) throws {
    let gossipd = try locateGossipd()
    let n = o.peers
    out("# membership-scale: \(n) gossipd peers on 127.0.0.1 (digits, model \(o.arch), pace \(o.paceMs) ms, no bootstrap), kill \(o.kill), freeze \(fmt2(o.freezeSeconds)) s, hog \(fmt2(o.hogSeconds)) s on \(ProcessInfo.processInfo.activeProcessorCount) cores, poll \(o.pollMs) ms, seed \(o.seed)")
    let dir = NSTemporaryDirectory() + "gossip-bench-membership-\(getpid())"
    try? FileManager.default.removeItem(atPath: dir)
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    var rng = SeededGenerator(seed: o.seed)   // kills, join targets and the frozen member, per --seed
    var procs: [Process] = []
    var hogs: [Process] = []
    defer {
        for p in procs + hogs where p.isRunning {
            kill(p.processIdentifier, SIGCONT)
            kill(p.processIdentifier, SIGKILL)
        }
        for p in procs + hogs { p.waitUntilExit() }
        if !o.keepDir { try? FileManager.default.removeItem(atPath: dir) } else { warn("membership-scale: logs kept in \(dir)") }
    }

    // Peer 0's initial model: a model-only checkpoint in its state directory.
    let arch = try MLPArchitecture(parsing: o.arch)
    try FileManager.default.createDirectory(atPath: dir + "/p0", withIntermediateDirectories: true)
    try SafeTensors.write(arch.makeParameters(seed: o.seed), metadata: ["arch": arch.description], to: dir + "/p0/model.safetensors")
    var ports: [UInt16] = []
    while ports.count < n {
        let p = try freePort()
        if !ports.contains(p) { ports.append(p) }
    }
    let endpoints = ports.map { "127.0.0.1:\($0)" }
    func args(_ i: Int) -> [String] {
        var a = ["peer", "--exit-with-parent", "--listen", endpoints[i], "--dataset", "digits", "--shard", "\(i)/\(n)",
                 "--lr", "0.05", "--batch", "32", "--input-noise", "0", "--local-steps", "10", "--seed", "\(Int(o.seed) + i)",
                 "--eval-every", "10", "--exchange-timeout", "3", "--pace-ms", "\(o.paceMs)", "--no-converge",
                 "--ready-file", "\(dir)/p\(i).ready", "--log-level", o.logLevel]
        if i == 0 {
            a += ["--state-dir", dir + "/p0", "--checkpoint-every", "1000000"]
        } else {
            a += ["--join", endpoints[Int.random(in: 0..<i, using: &rng)]]
        }
        return a + o.extra
    }
    func spawn(_ i: Int) throws -> Process {
        let p = try spawnLogged(gossipd, args(i), log: "\(dir)/p\(i).log")
        procs.append(p)
        return p
    }
    func waitReady(_ i: Int, _ p: Process, until: Double) throws {
        _ = try waitReadyFile("\(dir)/p\(i).ready", what: "peer \(i)", process: p, log: "\(dir)/p\(i).log", until: until)
    }
    let p0 = try spawn(0)
    try waitReady(0, p0, until: now() + 60)
    let tLaunch = now()
    var peerProcs = [p0]
    for i in 1..<n { peerProcs.append(try spawn(i)) }
    for i in 1..<n { try waitReady(i, peerProcs[i], until: tLaunch + o.joinTimeout) }
    let readyAfter = now() - tLaunch
    let controls = endpoints.map { Control(endpoint: try! Endpoint(parsing: $0), timeout: .seconds(5)) }

    /// One sweep: each peer's list (nil: it did not answer), with the time it was read.
    func sweep(_ who: [Int]) -> [Int: (Set<String>, Double)] {
        var r: [Int: (Set<String>, Double)] = [:]
        for i in who {
            if let s = try? controls[i].status() { r[i] = (Set(s.peers), now()) }
        }
        return r
    }
    func pause(_ since: Double) {
        let left = Double(o.pollMs) / 1000 - (now() - since)
        if left > 0 { Thread.sleep(forTimeInterval: left) }
    }

    // 1. Join.
    var joined: [Int: Double] = [:]
    let everyone = Array(0..<n)
    while joined.count < n, now() - tLaunch < o.joinTimeout {
        let t = now()
        for (i, (list, at)) in sweep(everyone.filter { joined[$0] == nil }) {
            if list.isSuperset(of: Set(endpoints).subtracting([endpoints[i]])) { joined[i] = at - tLaunch }
        }
        pause(t)
    }
    let joinTimes = everyone.map { joined[$0] ?? o.joinTimeout }
    out("peers_ready_s: \(fmt2(readyAfter))")
    out("join_time_p50_s: \(fmt2(percentile(joinTimes, 50)))")
    out("join_time_p99_s: \(fmt2(percentile(joinTimes, 99)))")
    out("join_time_max_s: \(fmt2(joinTimes.max() ?? .nan))")
    out("join_incomplete: \(n - joined.count)")

    // 2. Kill K at random (never peer 0: it is as mortal as any, but keeping it keeps the
    // numbering of the output simple).
    var candidates = Array(1..<n)
    candidates.shuffle(using: &rng)
    let killed = Array(candidates.prefix(min(o.kill, n - 2))).sorted()
    let live = everyone.filter { !killed.contains($0) }
    let tKill = now()
    for k in killed { kill(peerProcs[k].processIdentifier, SIGKILL) }
    for k in killed { peerProcs[k].waitUntilExit() }
    var detected: [String: Double] = [:]   // "k o" -> seconds
    var relisted = Set<String>()
    var stillListed = Set<String>()
    let pairs = killed.count * live.count
    // Until, in one sweep, no live member lists any killed one (a pair dropped and then
    // learned anew from another's list counts in detect_relisted; its time is the first drop).
    while now() - tKill < o.detectTimeout {
        let t = now()
        stillListed = []
        for (obs, (list, at)) in sweep(live) {
            for k in killed {
                let key = "\(k) \(obs)"
                if !list.contains(endpoints[k]) {
                    if detected[key] == nil { detected[key] = at - tKill }
                } else {
                    stillListed.insert(key)
                    if detected[key] != nil { relisted.insert(key) }
                }
            }
        }
        if detected.count == pairs && stillListed.isEmpty { break }
        pause(t)
    }
    let detectTimes = killed.flatMap { k in live.map { obs in detected["\(k) \(obs)"] ?? o.detectTimeout } }
    out("killed: \(killed.map(String.init).joined(separator: ","))")
    out("detect_pairs: \(pairs)")
    out("detect_time_p50_s: \(fmt2(percentile(detectTimes, 50)))")
    out("detect_time_p99_s: \(fmt2(percentile(detectTimes, 99)))")
    out("detect_time_max_s: \(fmt2(detectTimes.max() ?? .nan))")
    out("detect_undetected: \(pairs - detected.count)")
    out("detect_relisted: \(relisted.count)")
    out("detect_still_listed: \(stillListed.count)")
    out("detect_all_gone_s: \(stillListed.isEmpty && detected.count == pairs ? fmt2(now() - tKill) : "nan")")

    // 3. False evictions: a baseline where every live member lists every other, then the
    // phases; a member counts as falsely evicted when any live member stops listing it.
    let liveEndpoints = Set(live.map { endpoints[$0] })
    func waitFullMesh(_ what: String) -> Bool {
        let until = now() + o.joinTimeout
        while now() < until {
            let t = now()
            let s = sweep(live)
            if s.count == live.count, s.allSatisfy({ i, v in v.0.isSuperset(of: liveEndpoints.subtracting([endpoints[i]])) }) { return true }
            pause(t)
        }
        warn("membership-scale: the live members did not all list each other before the \(what) phase; evictions are counted against what each listed at its start")
        return false
    }
    func watch(seconds: Double, observers: [Int]) -> Set<Int> {
        let base = sweep(observers)
        var evicted = Set<Int>()
        let end = now() + seconds
        while now() < end {
            let t = now()
            for (obs, (list, _)) in sweep(observers) {
                for m in live where m != obs && base[obs]?.0.contains(endpoints[m]) == true && !list.contains(endpoints[m]) {
                    evicted.insert(m)
                }
            }
            pause(t)
        }
        return evicted
    }
    _ = waitFullMesh("freeze")
    let frozen = live.filter { $0 != 0 }.randomElement(using: &rng) ?? live[0]
    var evictedFreeze = Set<Int>()
    do {
        // Watch while frozen (the frozen member does not answer Status; the others are watched).
        kill(peerProcs[frozen].processIdentifier, SIGSTOP)
        evictedFreeze.formUnion(watch(seconds: o.freezeSeconds, observers: live.filter { $0 != frozen }))
        kill(peerProcs[frozen].processIdentifier, SIGCONT)
        evictedFreeze.formUnion(watch(seconds: o.settleSeconds, observers: live))
    }
    out("frozen: \(frozen)")
    out("false_evictions_freeze: \(evictedFreeze.count)")
    _ = waitFullMesh("hog")
    let cores = max(1, ProcessInfo.processInfo.activeProcessorCount)
    for _ in 0..<cores {
        let h = Process()
        h.executableURL = URL(fileURLWithPath: "/bin/sh")
        h.arguments = ["-c", "while :; do :; done"]
        try h.run()
        hogs.append(h)
    }
    var evictedHog = watch(seconds: o.hogSeconds, observers: live)
    for h in hogs { kill(h.processIdentifier, SIGKILL) }
    for h in hogs { h.waitUntilExit() }
    hogs.removeAll()
    evictedHog.formUnion(watch(seconds: o.settleSeconds, observers: live))
    out("false_evictions_hog: \(evictedHog.count)")
    out("false_evictions: \(evictedFreeze.union(evictedHog).count)")
    if !evictedFreeze.union(evictedHog).isEmpty {
        out("falsely_evicted: \(evictedFreeze.union(evictedHog).sorted().map(String.init).joined(separator: ","))")
    }

    // 4. The models (they trained all along).
    var models: [ParameterSet] = []
    var accuracies: [Double] = []
    for i in live {
        let path = "\(dir)/model-\(i).safetensors"
        if (try? controls[i].exportModel(to: path)) != nil, let m = try? SafeTensors.read(path: path) { models.append(m.parameters) }
        if let a = try? controls[i].status().accuracy { accuracies.append(a) }
    }
    var worst = 0.0
    for a in 0..<models.count { for b in (a + 1)..<models.count { worst = max(worst, Averaging.relativeL2Distance(models[a], models[b])) } }
    out("final_spread: \(String(format: "%.4f", worst))")
    out("accuracy_mean: \(accuracies.isEmpty ? "nan" : String(format: "%.4f", accuracies.reduce(0, +) / Double(accuracies.count)))")
}

struct MembershipScale: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "membership-scale",
        abstract: "N real gossipd peers on 127.0.0.1 with no bootstrap: join time, failure detection after killing K, false evictions under SIGSTOP and a CPU hog.",
        discussion: "Prints join_time_p50_s/_p99_s, detect_time_p50_s/_p99_s/_max_s (per killed member x live observer), false_evictions (target 0), final_spread and accuracy_mean. Build with -c release; README \"Membership at scale\".")
    @Option(help: "Peers.") var peers: Int = 32
    @Option(help: "Peers SIGKILLed at once, chosen at random.") var kill: Int = 8
    @Option(help: "Seed of the random choices (join targets, killed and frozen members) and of the initial model.") var seed: UInt64 = 1
    @Option(name: .customLong("pace-ms"), help: "Minimum ms per training round of every peer.") var paceMs: Int = 500
    @Option(help: "Model architecture.") var arch: String = "64,32,10"
    @Option(name: .customLong("freeze-s"), help: "Seconds one live member stays frozen (SIGSTOP); keep it below the suspicion timeout.") var freezeSeconds: Double = 3
    @Option(name: .customLong("hog-s"), help: "Seconds one busy loop per core runs.") var hogSeconds: Double = 30
    @Option(name: .customLong("settle-s"), help: "Seconds watched after the freeze and after the hog.") var settleSeconds: Double = 10
    @Option(name: .customLong("join-timeout-s"), help: "Longest wait for the peers to start and list each other.") var joinTimeout: Double = 180
    @Option(name: .customLong("detect-timeout-s"), help: "Longest wait for the live members to stop listing the killed ones.") var detectTimeout: Double = 180
    @Option(name: .customLong("poll-ms"), help: "Milliseconds between two Status sweeps over the peers.") var pollMs: Int = 500
    @Option(name: .customLong("log-level"), help: "Log level of the peers (their logs go to files).") var logLevel: String = "warning"
    @Option(name: .customLong("peer-arg"), parsing: .unconditionalSingleValue, help: "An argument passed to every peer as is (repeatable), e.g. --peer-arg=--swim-interval-ms --peer-arg=500.") var peerArg: [String] = []
    @Flag(name: .customLong("keep-dir"), help: "Keep the peers' logs (the directory is printed on stderr).") var keepDir = false

    func run() throws {
        guard peers >= 4, kill >= 0, kill <= peers - 2, paceMs >= 0, freezeSeconds > 0, hogSeconds >= 0, settleSeconds >= 0,
              joinTimeout > 0, detectTimeout > 0, pollMs > 0 else {
            throw ValidationError("--peers must be >= 4, --kill within 0...peers-2, --freeze-s, --join-timeout-s, --detect-timeout-s and --poll-ms positive, the others >= 0")
        }
        var o = MembershipScaleOptions()
        o.peers = peers
        o.kill = kill
        o.seed = seed
        o.paceMs = paceMs
        o.arch = arch
        o.freezeSeconds = freezeSeconds
        o.hogSeconds = hogSeconds
        o.settleSeconds = settleSeconds
        o.joinTimeout = joinTimeout
        o.detectTimeout = detectTimeout
        o.pollMs = pollMs
        o.logLevel = logLevel
        o.extra = peerArg
        o.keepDir = keepDir
        do { try runMembershipScaleSuite(o) } catch { throw fail("membership-scale: \(error)") }
    }
}
