// membership-sim: the command and its output (the engine is MembershipSim.swift, the SWIM
// adapter MembershipSimSwim.swift). Prints `key: value` lines per N, then a markdown table.

import ArgumentParser
import Foundation
import GossipNode

struct MembershipSimCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "membership-sim",
        abstract: "Simulated SWIM membership and averaging at 100 / 1,000 / 10,000 members (virtual time, one thread, no sockets).",
        discussion: """
            Per N: time until every surviving member marks a crashed member dead (p50/p99 over the crashed \
            members, and over every (member, crashed member) pair), false positives under --loss, membership \
            messages per member per second, and averaging rounds until every live model is within --tolerance \
            (relative L2) of the live members' mean, for the synchronous pairwise exchange (SPEC 5.3) and for \
            push-sum (SPEC 5.5). The same seed gives the same output, apart from wall_s.
            """)
    @Option(help: "Member counts, comma-separated.") var sizes: String = "100,1000,10000"
    @Option(help: "Seed of the network, the crashes, the models and every member's logic.") var seed: UInt64 = 1
    @Option(help: "Probability that a message is lost.") var loss: Double = 0.01
    @Option(name: .customLong("latency-ms"), help: "One-way delay, uniform in MIN-MAX milliseconds (or one value).") var latency: String = "1-10"
    @Option(help: "Members crashed per run.") var kills: Int = 5
    @Option(name: .customLong("kill-at-s"), help: "Virtual second of the first crash.") var killAt: Double = 20
    @Option(name: .customLong("kill-spacing-s"), help: "Virtual seconds between crashes.") var killSpacing: Double = 1
    @Option(name: .customLong("duration-s"), help: "Longest run, in virtual seconds.") var duration: Double = 120
    @Option(name: .customLong("min-duration-s"), help: "Shortest run (false positives are counted over it), in virtual seconds.") var minDuration: Double = 60
    @Option(name: .customLong("round-ms"), help: "One averaging round (each member starts one exchange and one push), virtual ms.") var roundMs: Double = 1000
    @Option(help: "Floats per member's model.") var dim: Int = 16
    @Option(help: "Agreement: relative L2 distance of every live model from the mean.") var tolerance: Double = 0.01
    @OptionGroup var swim: SwimSimOptions

    func validate() throws {
        _ = try parsedSizes()
        _ = try parsedLatency()
        guard loss >= 0, loss < 1 else { throw ValidationError("--loss \(loss): use a probability in [0, 1)") }
        guard kills >= 0, killAt >= 0, killSpacing >= 0 else { throw ValidationError("--kills, --kill-at-s and --kill-spacing-s must be >= 0") }
        guard duration > 0, minDuration >= 0, minDuration <= duration else { throw ValidationError("--duration-s must be positive and at least --min-duration-s") }
        guard roundMs > 0 else { throw ValidationError("--round-ms must be positive") }
        guard dim >= 1, dim <= 4096 else { throw ValidationError("--dim must be in 1...4096") }
        guard tolerance > 0 else { throw ValidationError("--tolerance must be positive") }
        try swim.validate()
    }

    func parsedSizes() throws -> [Int] {
        let parts = sizes.split(separator: ",").map { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard !parts.isEmpty, parts.allSatisfy({ ($0 ?? 0) >= 3 && ($0 ?? 0) <= 100_000 }) else {
            throw ValidationError("--sizes '\(sizes)': use comma-separated member counts in 3...100000, e.g. 100,1000,10000")
        }
        return parts.map { $0! }
    }

    func parsedLatency() throws -> (Double, Double) {
        let parts = latency.split(separator: "-", omittingEmptySubsequences: false).map { Double($0) }
        guard (1...2).contains(parts.count), parts.allSatisfy({ ($0 ?? -1) >= 0 }) else {
            throw ValidationError("--latency-ms '\(latency)': use MIN-MAX (e.g. 1-10) or one value, in milliseconds")
        }
        let lo = parts[0]!, hi = parts.last!!
        guard hi >= lo else { throw ValidationError("--latency-ms '\(latency)': MIN must not exceed MAX") }
        return (lo, hi)
    }

    func run() throws {
        var o = MembershipSimOptions()
        o.seed = seed
        o.loss = loss
        (o.latencyMinMs, o.latencyMaxMs) = try parsedLatency()
        o.kills = kills
        o.killAtS = killAt
        o.killSpacingS = killSpacing
        o.durationS = duration
        o.minDurationS = minDuration
        o.roundMs = roundMs
        o.dim = dim
        o.tolerance = tolerance
        runMembershipSimSuite(o, sizes: try parsedSizes(), swim: swim)
    }
}

/// Nearest-rank percentile of `values` (p in 0...100); nil when empty.
func percentile(_ values: [Double], _ p: Double) -> Double? {
    guard !values.isEmpty else { return nil }
    let s = values.sorted()
    let rank = Int((p / 100 * Double(s.count)).rounded(.up))
    return s[min(max(rank, 1), s.count) - 1]
}

func runMembershipSimSuite(_ base: MembershipSimOptions, sizes: [Int], swim: SwimSimOptions) {
    out(String(format: "# membership-sim: latency %g-%g ms, loss %g, %d crashes from %g s every %g s, round %g ms, dim %d, tolerance %g, seed %llu",
               base.latencyMinMs, base.latencyMaxMs, base.loss, base.kills, base.killAtS, base.killSpacingS,
               base.roundMs, base.dim, base.tolerance, base.seed))
    out("# membership: " + swim.describe())
    out("# agreement: every live model within the tolerance of the plain mean of the live models (relative L2); sync = pairwise exchange (SPEC 5.3), push-sum = SPEC 5.5")
    var rows: [(Int, MembershipSimResult)] = []
    for n in sizes {
        var o = base
        o.members = n
        o.periodMs = swim.periodMs
        let r = simulateSwim(o, swim: swim)
        rows.append((n, r))
        let k = "n\(n)_"
        func fmt(_ v: Double?) -> String { v.map { String(format: "%.3f", $0) } ?? "none" }
        let all = r.detectAll.compactMap { $0 }
        out("\(k)detect_all_p50_s: \(fmt(percentile(all, 50)))")
        out("\(k)detect_all_p99_s: \(fmt(percentile(all, 99)))")
        out("\(k)detect_member_p50_s: \(fmt(percentile(r.detectEach, 50)))")
        out("\(k)detect_member_p99_s: \(fmt(percentile(r.detectEach, 99)))")
        out("\(k)detect_first_p50_s: \(fmt(percentile(r.detectFirst, 50)))")
        out("\(k)crashes_undetected: \(r.detectAll.filter { $0 == nil }.count) of \(r.detectAll.count)")
        out("\(k)false_dead_members: \(r.falseDeadMembers)")
        out("\(k)false_dead_declarations: \(r.falseDeadDeclarations)")
        out(String(format: "\(k)false_positive_rate: %.3e", Double(r.falseDeadMembers) / max(r.memberPeriods, 1)))
        out("\(k)false_suspicions: \(r.falseSuspicions)")
        out(String(format: "\(k)member_periods: %.0f", r.memberPeriods))
        out(String(format: "\(k)membership_msgs_per_member_s: %.3f", Double(r.membershipMessages) / Double(n) / max(r.simulatedS, 1e-9)))
        out(String(format: "\(k)averaging_msgs_per_member_s: %.3f", Double(r.averagingMessages) / Double(n) / max(r.simulatedS, 1e-9)))
        out("\(k)sync_rounds: \(r.syncRounds.map(String.init) ?? "none")")
        out("\(k)push_sum_rounds: \(r.pushSumRounds.map(String.init) ?? "none")")
        let log2n = log2(Double(n))
        out("\(k)sync_rounds_per_log2n: \(fmt(r.syncRounds.map { Double($0) / log2n }))")
        out("\(k)push_sum_rounds_per_log2n: \(fmt(r.pushSumRounds.map { Double($0) / log2n }))")
        out("\(k)exchanges: done \(r.exchangesDone) busy \(r.exchangesBusy) timed_out \(r.exchangesTimedOut); pushes: confirmed \(r.pushesConfirmed) refused \(r.pushesRefused) unconfirmed \(r.pushesUnconfirmed)")
        out(String(format: "\(k)simulated_s: %.1f", r.simulatedS))
        out("\(k)events: \(r.events)")
        out(String(format: "\(k)wall_s: %.2f", r.wallS))
    }
    // Growth of rounds-to-agreement against log N, smallest vs largest N.
    if let first = rows.first, let last = rows.last, last.0 > first.0 {
        let logRatio = log(Double(last.0)) / log(Double(first.0))
        for (name, get) in [("sync", { (r: MembershipSimResult) in r.syncRounds }), ("push_sum", { (r: MembershipSimResult) in r.pushSumRounds })] {
            if let a = get(first.1), let b = get(last.1) {
                out(String(format: "%@_rounds_growth_n%d_to_n%d: %.3f (log N grows %.3f; ratio to it %.3f)",
                           name, first.0, last.0, Double(b) / Double(a), logRatio, Double(b) / Double(a) / logRatio))
            } else {
                out("\(name)_rounds_growth_n\(first.0)_to_n\(last.0): none (agreement not reached)")
            }
            // Least squares rounds = a + b log2 N over every size that agreed: b > 0 with a
            // small residual is "grows like log N" (a: the rounds any N needs to shrink the
            // initial spread; b log2 N: reaching the farthest of N members).
            let pts = rows.compactMap { n, r in get(r).map { (log2(Double(n)), Double($0)) } }
            if pts.count >= 2 {
                let mx = pts.map(\.0).reduce(0, +) / Double(pts.count), my = pts.map(\.1).reduce(0, +) / Double(pts.count)
                let sxx = pts.map { ($0.0 - mx) * ($0.0 - mx) }.reduce(0, +)
                let sxy = pts.map { ($0.0 - mx) * ($0.1 - my) }.reduce(0, +)
                let slope = sxx > 0 ? sxy / sxx : 0, icept = my - slope * mx
                let resid = pts.map { abs($0.1 - (icept + slope * $0.0)) }.max() ?? 0
                out(String(format: "%@_rounds_fit: %.2f + %.3f x log2 N (largest residual %.2f rounds)", name, icept, slope, resid))
            }
        }
    }
    out("")
    out("| N | detect all p50 / p99 (s) | detect per member p50 / p99 (s) | undetected | false dead (members) | FP rate / member-period | membership msgs / member / s | sync rounds | push-sum rounds | sync rounds / log2 N | push-sum rounds / log2 N | wall (s) |")
    out("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for (n, r) in rows {
        func f(_ v: Double?) -> String { v.map { String(format: "%.2f", $0) } ?? "-" }
        let all = r.detectAll.compactMap { $0 }
        let log2n = log2(Double(n))
        out("| \(n) | \(f(percentile(all, 50))) / \(f(percentile(all, 99))) | \(f(percentile(r.detectEach, 50))) / \(f(percentile(r.detectEach, 99))) | \(r.detectAll.filter { $0 == nil }.count) of \(r.detectAll.count) | \(r.falseDeadMembers) | \(String(format: "%.1e", Double(r.falseDeadMembers) / max(r.memberPeriods, 1))) | \(String(format: "%.2f", Double(r.membershipMessages) / Double(n) / max(r.simulatedS, 1e-9))) | \(r.syncRounds.map(String.init) ?? "-") | \(r.pushSumRounds.map(String.init) ?? "-") | \(f(r.syncRounds.map { Double($0) / log2n })) | \(f(r.pushSumRounds.map { Double($0) / log2n })) | \(String(format: "%.1f", r.wallS)) |")
    }
}
