// `--compression auto`: the decision rule (compress when link < codec × (1 − 1/ratio)) and
// the per-peer measurements that feed it.
import Testing
import GossipWire
@testable import GossipNode

@Suite struct LinkChooserTests {
    @Test func ruleComparesTheLinkWithWhatCompressionSaves() {
        // codec 200 MB/s, ratio 1.25: compressing saves 20% of the wire, so it pays below 40 MB/s.
        #expect(abs(CompressionChoice.breakEvenMBps(codecMBps: 200, ratio: 1.25) - 40) < 1e-9)
        #expect(CompressionChoice.shouldCompress(linkMBps: 12.5, codecMBps: 200, ratio: 1.25))    // 100 Mbit/s
        #expect(CompressionChoice.shouldCompress(linkMBps: 39, codecMBps: 200, ratio: 1.25))
        #expect(!CompressionChoice.shouldCompress(linkMBps: 41, codecMBps: 200, ratio: 1.25))
        #expect(!CompressionChoice.shouldCompress(linkMBps: 125, codecMBps: 200, ratio: 1.25))    // 1 Gbit/s
        #expect(!CompressionChoice.shouldCompress(linkMBps: 2000, codecMBps: 200, ratio: 1.25))   // loopback
        // A slower codec moves the break-even down: 50 MB/s × 0.2 = 10 MB/s.
        #expect(!CompressionChoice.shouldCompress(linkMBps: 12.5, codecMBps: 50, ratio: 1.25))
    }

    @Test func neverCompressesWithoutAGainOrAMeasurement() {
        #expect(!CompressionChoice.shouldCompress(linkMBps: nil, codecMBps: 200, ratio: 2))
        #expect(!CompressionChoice.shouldCompress(linkMBps: 1, codecMBps: 200, ratio: 1))       // incompressible
        #expect(!CompressionChoice.shouldCompress(linkMBps: 1, codecMBps: 200, ratio: 0.9))     // grows
        #expect(!CompressionChoice.shouldCompress(linkMBps: .nan, codecMBps: 200, ratio: 2))
        #expect(!CompressionChoice.shouldCompress(linkMBps: 1, codecMBps: .infinity, ratio: 2))
        #expect(!CompressionChoice.shouldCompress(linkMBps: 0, codecMBps: 200, ratio: 2))
    }

    @Test func choosesPerPeerFromMeasuredExchanges() {
        let links = LinkChooser(codec: CodecSpeed(codecMBps: 200, ratio: 1.25))
        // Unknown peers are sent plain (which measures them).
        #expect(links.mode(for: "10.0.0.2:7000") == .none)
        // 80 MB both ways in 6.4 s: 12.5 MB/s (100 Mbit/s) -> compress.
        links.record(peer: "10.0.0.2:7000", wireBytes: 80_000_000, rawBytes: 0, seconds: 6.4)
        #expect(links.linkMBps("10.0.0.2:7000") == 12.5)
        #expect(links.mode(for: "10.0.0.2:7000") == CompressionChoice.compressed)
        // 80 MB in 0.64 s: 125 MB/s (1 Gbit/s) -> plain.
        links.record(peer: "10.0.0.3:7000", wireBytes: 80_000_000, rawBytes: 0, seconds: 0.64)
        #expect(links.mode(for: "10.0.0.3:7000") == .none)
        #expect(links.mode(for: "10.0.0.2:7000") == CompressionChoice.compressed)
        // The codec's share is taken out of a compressed exchange's time: 64 MB on the wire in
        // 5.52 s with 160 MB of codec work (0.8 s at 200 MB/s) is 64 / 4.72 ≈ 13.6 MB/s of link.
        let fresh = LinkChooser(codec: CodecSpeed(codecMBps: 200, ratio: 1.25))
        fresh.record(peer: "p", wireBytes: 64_000_000, rawBytes: 160_000_000, seconds: 5.52)
        #expect(abs(fresh.linkMBps("p")! - 64 / 4.72) < 1e-9)
        // A link that gets faster is followed (mean of the old and the new figure).
        links.record(peer: "10.0.0.2:7000", wireBytes: 80_000_000, rawBytes: 0, seconds: 0.4)   // 200 MB/s
        #expect(links.linkMBps("10.0.0.2:7000") == (12.5 + 200) / 2)
        #expect(links.mode(for: "10.0.0.2:7000") == .none)
    }

    @Test func withoutACodecMeasurementItSendsPlainAndAsksForOne() {
        let links = LinkChooser()
        #expect(links.needsCalibration)
        links.record(peer: "p", wireBytes: 1_000_000, rawBytes: 0, seconds: 1)
        #expect(links.mode(for: "p") == .none)
        links.setCodec(CodecSpeed(codecMBps: 100, ratio: 1.2))
        #expect(!links.needsCalibration)
        #expect(links.mode(for: "p") == CompressionChoice.compressed)   // 1 MB/s < 100 × (1 − 1/1.2)
        for _ in 0..<LinkChooser.recalibrateEvery { _ = links.mode(for: "p") }
        #expect(links.needsCalibration)
    }

    /// One measurement at a time, off the sender's thread: `beginCalibration` says yes once
    /// until `endCalibration`; a failed measurement leaves it due, a good one resets the count.
    @Test func oneCalibrationAtATime() {
        let links = LinkChooser()
        #expect(links.beginCalibration())
        #expect(!links.beginCalibration(), "a second measurement while one is under way")
        links.endCalibration(nil)
        #expect(links.needsCalibration && links.beginCalibration())
        links.endCalibration(CodecSpeed(codecMBps: 80, ratio: 1.1))
        #expect(!links.needsCalibration && !links.beginCalibration())
        #expect(links.codec == CodecSpeed(codecMBps: 80, ratio: 1.1))
        for _ in 0..<LinkChooser.recalibrateEvery { _ = links.mode(for: "p") }
        #expect(links.beginCalibration())
    }

    @Test func tableIsBoundedWhateverPeersClaim() {
        let links = LinkChooser(codec: CodecSpeed(codecMBps: 100, ratio: 1.2))
        for i in 0..<(LinkChooser.maxPeers + 50) {
            links.record(peer: "10.1.\(i / 256).\(i % 256):7000", wireBytes: 1000, rawBytes: 0, seconds: 0.001)
        }
        #expect(links.report.links.count == LinkChooser.maxPeers)
        #expect(links.linkMBps("10.1.0.0:7000") == nil)           // the oldest went first
        #expect(links.linkMBps("10.1.4.49:7000") != nil)          // the newest stays
    }

    @Test func codecMeasurementOnRealWeights() {
        var x: UInt32 = 1
        let w = (0..<(1 << 20)).map { _ -> Float in x = x &* 1664525 &+ 1013904223; return Float(Int32(bitPattern: x) >> 16) * 1e-6 }
        let c = w.withUnsafeBytes { CodecSpeed.measure($0, chunks: 1) }
        #expect(c != nil)
        #expect(c!.codecMBps > 0)
        #expect(c!.ratio > 1)   // small-magnitude floats shuffle and compress
    }

    @Test func repliesMirrorTheRequest() {
        #expect(compressionMirroring([]) == .none)
        #expect(compressionMirroring([.compressed]) == .zlib(level: 1, shuffle: false))
        #expect(compressionMirroring([.compressed, .shuffled, .checksummed]) == .zlib(level: 1, shuffle: true))
    }
}
