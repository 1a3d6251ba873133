// `--compression auto`: per peer, send model payloads plain or zlib-shuffled, whichever the
// measured link and the measured codec say is faster (README "Slow links"; the rule below).
//
// The rule. Sending N raw bytes over a link of L MB/s takes N/L. Compressed, it takes the
// codec's time N/Z (Z: this node's measured MB/s of deflate + inflate on all cores, i.e.
// 1/Z = 1/C_deflate + 1/C_inflate) plus N/(r·L) on the wire (r: the measured ratio). So
// compressing wins when N/Z + N/(r·L) < N/L, that is when
//
//     L < Z · (1 − 1/r)
//
// (never when r ≤ 1). This is the worst case for compression (it counts the codec's time in
// full although chunks are deflated and inflated in parallel with sending), so it compresses
// only where it clearly pays. The decision only picks how this node *sends*; what it may
// lose is speed, never correctness: receivers accept both (SPEC §7). It never changes the
// dtype (lossy encodings stay the user's explicit choice).
//
// The measurements. L per peer: after each exchange this node started, the bytes on the wire
// both ways (twice the reply's wire bytes: request and reply carry the same model) over the
// round trip's time minus the codec's estimated share when compressed; an exponentially
// weighted mean (weight 1/2 for the newest) so the choice follows a link that changes. The
// round trip also holds the other peer's averaging, so L is under-estimated a little: that
// errs toward compressing on fast links only when the codec is faster still. Z and r: timed
// once on this node's own weights (one 4 MiB chunk deflated and inflated) at the first
// decision, and again every `recalibrateEvery` decisions. A peer with no measurement yet is
// sent plain, which measures the link. The table is bounded (`maxPeers`, least recently
// used out), whatever peers claim.
import Foundation
import GossipWire
import Synchronization

/// The pure decision: compress or not, from a link speed, a codec speed and a ratio.
public enum CompressionChoice {
    /// The mode `--compression auto` uses when it compresses.
    public static let compressed = CompressionMode.zlib(level: 1, shuffle: true)

    /// True when sending compressed is expected to be faster: `linkMBps < codecMBps * (1 - 1/ratio)`.
    /// - Parameters:
    ///   - linkMBps: measured link throughput to the peer (MB/s of wire bytes); nil: unknown.
    ///   - codecMBps: this node's deflate + inflate throughput in MB/s of raw bytes.
    ///   - ratio: raw bytes / compressed bytes of this node's weights.
    public static func shouldCompress(linkMBps: Double?, codecMBps: Double, ratio: Double) -> Bool {
        guard let link = linkMBps, link.isFinite, link > 0, codecMBps.isFinite, codecMBps > 0,
              ratio.isFinite, ratio > 1 else { return false }
        return link < codecMBps * (1 - 1 / ratio)
    }

    /// The link speed below which compression pays (MB/s), for status and logs.
    public static func breakEvenMBps(codecMBps: Double, ratio: Double) -> Double {
        guard ratio > 1, codecMBps > 0 else { return 0 }
        return codecMBps * (1 - 1 / ratio)
    }
}

/// This node's measured codec: MB/s of deflate + inflate of raw bytes, and the ratio.
public struct CodecSpeed: Sendable, Equatable {
    public var codecMBps: Double
    public var ratio: Double
    public init(codecMBps: Double, ratio: Double) {
        self.codecMBps = codecMBps
        self.ratio = ratio
    }

    /// Times `CompressionChoice.compressed` on `sample` (deflate then inflate), scaled by the
    /// cores the chunk work uses (`ParallelChunks.width`, at most the message's chunk count).
    public static func measure(_ sample: UnsafeRawBufferPointer, chunks: Int) -> CodecSpeed? {
        guard sample.count >= 4096 else { return nil }
        guard case .zlib(let level, let shuffle) = CompressionChoice.compressed else { return nil }
        let t0 = ContinuousClock.now
        guard let packed = try? Compression.deflate(sample, level: level, shuffle: shuffle) else { return nil }
        let back = ByteStorage(count: sample.count)
        let ok: Bool = packed.withUnsafeBytes { p in
            (try? Compression.inflate(p, into: back.mutableBytes, shuffled: shuffle, at: 0)) != nil
        }
        guard ok else { return nil }
        let t2 = ContinuousClock.now
        let seconds = (t2 - t0).seconds
        guard seconds > 0 else { return nil }
        let parallel = Double(Swift.max(1, Swift.min(ParallelChunks.width, chunks)))
        return CodecSpeed(codecMBps: Double(sample.count) / 1e6 / seconds * parallel,
                          ratio: Double(sample.count) / Double(Swift.max(1, packed.count)))
    }
}

/// Per-peer link measurements and the `--compression auto` choice. Thread-safe.
public final class LinkChooser: Sendable {
    public static let maxPeers = 1024
    public static let recalibrateEvery = 100

    fileprivate struct Link { var mbps: Double; var used: UInt64 }
    fileprivate struct State {
        var links: [String: Link] = [:]
        var codec: CodecSpeed?
        var decisions = 0
        /// A measurement is under way (`beginCalibration`).
        var calibrating = false
        var calibrationDue: Bool { codec == nil || decisions >= LinkChooser.recalibrateEvery }
        var clock: UInt64 = 0
    }
    fileprivate let state = Mutex(State())

    public init(codec: CodecSpeed? = nil) {
        state.withLock { $0.codec = codec }
    }

    /// True when the codec should be (re)measured before the next decision.
    public var needsCalibration: Bool { state.withLock { $0.calibrationDue } }

    /// Records a fresh codec measurement.
    public func setCodec(_ c: CodecSpeed) {
        state.withLock { $0.codec = c; $0.decisions = 0 }
    }

    /// True (once) when the codec should be measured and no measurement is under way; the
    /// caller then measures off its own thread and calls `endCalibration`.
    public func beginCalibration() -> Bool {
        state.withLock { s in
            guard !s.calibrating, s.calibrationDue else { return false }
            s.calibrating = true
            return true
        }
    }

    /// Ends the measurement `beginCalibration` started: keeps `c` when there is one.
    public func endCalibration(_ c: CodecSpeed?) {
        state.withLock { s in
            s.calibrating = false
            if let c { s.codec = c; s.decisions = 0 }
        }
    }

    public var codec: CodecSpeed? { state.withLock { $0.codec } }

    /// The measured link speed to `peer` in MB/s, if any.
    public func linkMBps(_ peer: String) -> Double? { state.withLock { $0.links[peer]?.mbps } }

    /// How to send a model payload to `peer` now.
    public func mode(for peer: String) -> CompressionMode {
        state.withLock { s in
            s.decisions += 1
            guard let c = s.codec else { return .none }
            return CompressionChoice.shouldCompress(linkMBps: s.links[peer]?.mbps, codecMBps: c.codecMBps, ratio: c.ratio)
                ? CompressionChoice.compressed : .none
        }
    }

    /// Records one exchange with `peer`: `wireBytes` moved both ways in `seconds`, of which
    /// `rawBytes` were compressed (0 when sent plain) by this node's codec.
    public func record(peer: String, wireBytes: Int, rawBytes: Int, seconds: Double) {
        state.withLock { s in
            var t = seconds
            if rawBytes > 0, let c = s.codec, c.codecMBps > 0 {
                t -= Double(rawBytes) / 1e6 / c.codecMBps
            }
            t = Swift.max(t, seconds * 0.05, 1e-6)
            let mbps = Double(wireBytes) / 1e6 / t
            guard mbps.isFinite, mbps > 0 else { return }
            s.clock &+= 1
            if let old = s.links[peer] {
                s.links[peer] = Link(mbps: 0.5 * old.mbps + 0.5 * mbps, used: s.clock)
            } else {
                if s.links.count >= LinkChooser.maxPeers,
                   let oldest = s.links.min(by: { $0.value.used < $1.value.used })?.key {
                    s.links[oldest] = nil
                }
                s.links[peer] = Link(mbps: mbps, used: s.clock)
            }
        }
    }
}

/// The reply to a request that arrived with `flags`, under `--compression auto`: answer in kind
/// (the caller measured the link and chose; a reply carries the same model size back).
public func compressionMirroring(_ flags: FrameFlags) -> CompressionMode {
    flags.contains(.compressed) ? .zlib(level: 1, shuffle: flags.contains(.shuffled)) : .none
}

extension LinkChooser {
    /// The `compression_auto` object of the status document.
    public var report: StatusReport.CompressionAuto {
        var r = StatusReport.CompressionAuto()
        state.withLock { s in
            if let c = s.codec {
                r.codecMBps = c.codecMBps
                r.ratio = c.ratio
                r.compressBelowMBps = CompressionChoice.breakEvenMBps(codecMBps: c.codecMBps, ratio: c.ratio)
            }
            for (peer, l) in s.links { r.links[peer] = l.mbps }
        }
        return r
    }
}
