// `gossip-bench membership-sim` (issue 11 item 7): the simulator on 50 members finds the
// crashed members, declares no live member dead, the averagings agree, and the same seed
// gives the same output in two separate processes (wall_s aside).
import Foundation
import Testing

@Suite struct MembershipSimTests {
    private func sim(_ extra: [String]) throws -> (Int32, String, String) {
        try Cluster.run(Cluster.binary("gossip-bench"),
                        ["membership-sim", "--sizes", "50", "--kills", "2", "--kill-at-s", "5", "--duration-s", "90",
                         "--min-duration-s", "0"] + extra, timeout: 120)
    }

    /// The value of `key: value` in `out`, or nil.
    private func value(_ out: String, _ key: String) -> String? {
        for line in out.split(separator: "\n") where line.hasPrefix(key + ": ") {
            return String(line.dropFirst(key.count + 2))
        }
        return nil
    }

    @Test func fiftyMembersDetectTheCrashesAndAgreeDeterministically() throws {
        let (status, out, err) = try sim(["--seed", "7", "--loss", "0.01"])
        #expect(status == 0, "\(err)")
        #expect(value(out, "n50_crashes_undetected") == "0 of 2", "\(out)")
        #expect(value(out, "n50_false_dead_members") == "0", "\(out)")
        let detect = value(out, "n50_detect_all_p99_s").flatMap(Double.init)
        #expect(detect != nil && detect! > 0, "a crash is detected some time after it happens: \(out)")
        let sync = value(out, "n50_sync_rounds").flatMap(Int.init)
        let push = value(out, "n50_push_sum_rounds").flatMap(Int.init)
        #expect(sync != nil && sync! >= 2, "sync averaging agrees within 1% (and not at once): \(out)")
        #expect(push != nil && push! >= 2, "push-sum agrees within 1% (and not at once): \(out)")
        let msgs = value(out, "n50_membership_msgs_per_member_s").flatMap(Double.init)
        #expect(msgs != nil && msgs! > 0.5, "members probe every period: \(out)")
        #expect(out.contains("| 50 | "), "the markdown table has the row: \(out)")

        // A second process with the same seed prints the same lines (wall time aside).
        let (status2, out2, err2) = try sim(["--seed", "7", "--loss", "0.01"])
        #expect(status2 == 0, "\(err2)")
        func stable(_ s: String) -> [String] {
            s.split(separator: "\n").map(String.init).filter { !$0.contains("wall_s") && !$0.hasPrefix("| 50 |") }
        }
        #expect(stable(out) == stable(out2))
    }

    @Test func usageErrorsExit64() throws {
        for bad in [["--sizes", "2"], ["--loss", "1.5"], ["--latency-ms", "10-1"], ["--sizes", "x"]] {
            let (status, _, err) = try sim(bad)
            #expect(status == 64, "\(bad): \(err)")
        }
    }
}
