// gossip-bench's command line (swift-argument-parser): subcommands per suite, usage errors
// exit 64, and the `key: value` lines scripts read keep their keys.
import Foundation
import Testing

@Suite struct BenchCLITests {
    private func bench(_ args: [String]) throws -> (Int32, String, String) {
        try Cluster.run(Cluster.binary("gossip-bench"), args, timeout: 120)
    }

    private func keys(_ out: String) -> [String] {
        out.split(separator: "\n").filter { !$0.hasPrefix("#") }.map { String($0.prefix { $0 != ":" }) }
    }

    @Test func wireKeysAreUnchanged() throws {
        let (status, out, err) = try bench(["wire", "4096"])
        #expect(status == 0, "\(err)")
        let base: [String] = ["floats", "memcpy_mb_per_s", "encode_mb_per_s", "encode_alloc_mb_per_s", "decode_mb_per_s",
                              "decode_crc_mb_per_s", "receive_decode_mb_per_s", "encode_vs_memcpy", "encode_alloc_vs_memcpy",
                              "decode_vs_memcpy", "decode_crc_vs_memcpy", "receive_decode_vs_memcpy",
                              "receive_decode_crc_vs_memcpy", "zlib_ratio_plain", "zlib_plain_mb_per_s", "zlib_ratio_shuffle",
                              "zlib_shuffle_mb_per_s"]
        // Lossy encodings (SPEC §6.5), appended.
        let lossy: [String] = ["bf16", "fp16", "int8"].flatMap { d in
            ["encode_mb_s", "decode_mb_s", "bytes_vs_f32", "max_rel_err"].map { "\(d)_\($0)" }
        }
        // Parallel chunk compression (README "Slow links"), appended.
        let parallel: [String] = ["cores", "zlib_shuffle_1core_mb_per_s", "zlib_shuffle_parallel_mb_per_s", "zlib_ratio_shuffle_1core",
                                  "zlib_ratio_shuffle_parallel", "zlib_parallel_speedup", "zlib_inflate_1core_mb_per_s",
                                  "zlib_inflate_parallel_mb_per_s", "zlib_parallel_inflate_speedup"]
        let expected = base + lossy + parallel
        #expect(keys(out) == expected)
        #expect(out.contains("floats: 4096\n"))
    }

    @Test func netKeysAreUnchanged() throws {
        let (status, out, err) = try bench(["net", "--sizes", "1M", "--reps", "1"])
        #expect(status == 0, "\(err)")
        #expect(keys(out) == ["exchange_1M_rpc_ms", "exchange_1M_socket_ms", "exchange_1M_vs_socket", "exchange_1M_socket_freshbuf_ms",
                              "handshake_us", "connect_ping_plain_us", "record_seal_mb_per_s", "record_open_mb_per_s"])
    }

    /// `peers-frozen` (SPEC §5.6) with short phases: real gossipd peers, one frozen. Its keys
    /// stay, the network keeps training while a peer is frozen, and with Reserve no refused
    /// exchange carries a model (bytes per completed exchange near one model each way).
    @Test func peersFrozenRunsAndKeepsItsKeys() throws {
        let (status, out, err) = try bench(["peers-frozen", "--normal-s", "4", "--frozen-s", "5"])
        #expect(status == 0, "\(err)")
        #expect(keys(out) == ["averaging", "model_bytes", "others_rounds_per_s_normal", "others_rounds_per_s_frozen",
                              "others_rate_while_frozen", "exchanges_done", "exchanges_busy", "exchanges_failed", "reserve_busy",
                              "bytes_per_exchange_vs_model_in", "bytes_per_exchange_vs_model_out", "bytes_per_exchange_vs_model"])
        func value(_ k: String) -> Double {
            out.split(separator: "\n").first { $0.hasPrefix(k + ": ") }.flatMap { Double($0.dropFirst(k.count + 2)) } ?? -1
        }
        #expect(value("exchanges_done") > 0)
        // Loose bounds for a loaded debug build; the figures themselves belong to the bench.
        #expect(value("others_rate_while_frozen") > 0.4, "\(out)")
        #expect(value("bytes_per_exchange_vs_model") > 0.9 && value("bytes_per_exchange_vs_model") < 1.5, "\(out)")
    }

    /// time-to-accuracy runs real gossipd processes: a short centralized and a 2-peer sync
    /// row on digits with a low target, every key present and the target reached.
    @Test func timeToAccuracySmoke() throws {
        let (status, out, err) = try bench(["time-to-accuracy", "--modes", "central,sync", "--peers", "2", "--rounds", "6",
                                            "--target", "0.6", "--timeout", "90"])
        #expect(status == 0, "\(err)")
        var expected = ["dataset", "target", "rounds", "peers"]
        for row in ["central", "sync"] {
            expected += ["seconds", "steps_total", "steps_per_peer", "final_acc_mean", "final_acc_min", "consensus", "wall_s"]
                .map { "tta_digits_\(row)_\($0)" }
        }
        #expect(keys(out) == expected)
        func value(_ k: String) -> Double? {
            out.split(separator: "\n").first { $0.hasPrefix(k + ": ") }.flatMap { Double($0.dropFirst(k.count + 2)) }
        }
        // Both rows reached 60%; 2 sync peers spent twice the steps of one of them.
        #expect((value("tta_digits_central_seconds") ?? -1) >= 0, "\(out)")
        #expect((value("tta_digits_sync_seconds") ?? -1) >= 0, "\(out)")
        #expect(value("tta_digits_sync_steps_total") == 2 * (value("tta_digits_sync_steps_per_peer") ?? 0))
        #expect((value("tta_digits_sync_final_acc_min") ?? 0) >= 0.6)
        #expect((value("tta_digits_sync_consensus") ?? 1) < 0.5)
    }

    @Test func usageErrorsExit64() throws {
        for args in [["no-such-suite"], ["net", "--sizes", "2M"], ["train-accuracy", "--schedule", "weekly"],
                     ["time-to-accuracy", "--modes", "async"], ["time-to-accuracy", "--straggler-factor", "0.5"], ["time-to-accuracy", "--repeat", "0"],
                     ["gossip-sim", "--peers", "0"], ["peers-frozen", "--peers", "1"], ["export-digits"], ["train", "--batch", "x"]] {
            let (status, _, err) = try bench(args)
            #expect(status == 64, "gossip-bench \(args) exited \(status): \(err)")
            #expect(err.contains("Error:") || err.contains("error"), "gossip-bench \(args): no diagnostic on stderr")
        }
    }
}
