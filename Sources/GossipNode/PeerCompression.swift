// How a peer compresses the model payloads it sends: the fixed `--compression`, or under
// `--compression auto` the per-peer choice of LinkChooser.swift (measured link vs codec).
import Dispatch
import GossipWire

extension PeerNode {
    /// Compression for a model payload this node sends to `peer` on its own initiative
    /// (an exchange request, a push). Under auto, the codec is measured on a copy of the
    /// model's first 4 MiB off this thread (about a tenth of a second of zlib, every
    /// `LinkChooser.recalibrateEvery` decisions); decisions meanwhile use the last measurement
    /// (none at first: plain, which measures the link).
    func sendCompression(to peer: String, params: [Float]) -> CompressionMode {
        guard config.autoCompression else { return config.compression }
        if links.beginCalibration() {
            let sampleBytes = Swift.min(params.count * 4, 4 << 20)
            let chunks = (params.count * 4 + (4 << 20) - 1) / (4 << 20)
            let sample: [UInt8] = params.withUnsafeBytes { Array($0[0..<sampleBytes]) }
            let links = links, logger = logger
            DispatchQueue.global(qos: .utility).async {
                let c = sample.withUnsafeBytes { CodecSpeed.measure($0, chunks: chunks) }
                links.endCalibration(c)
                if let c {
                    logger.debug("codec measured", metadata: ["codec_mb_per_s": "\(c.codecMBps)", "ratio": "\(c.ratio)",
                                                              "compress_below_mb_per_s": "\(CompressionChoice.breakEvenMBps(codecMBps: c.codecMBps, ratio: c.ratio))"])
                }
            }
        }
        return links.mode(for: peer)
    }

    /// Compression of a reply carrying a model to the sender of `request`: under auto, in
    /// kind with the request (its sender measured the link and chose).
    func replyCompression(_ request: InboundMessage) -> CompressionMode {
        config.autoCompression ? compressionMirroring(request.firstFrameFlags) : config.compression
    }

    /// Records an exchange this node started (auto only): its reply's wire bytes twice
    /// (the request carried as many), the raw bytes this node compressed, and the round trip.
    func recordLink(peer: String, mode: CompressionMode, reply: InboundMessage, rawBytes: Int, took: Duration) {
        guard config.autoCompression else { return }
        let compressedRaw: Int
        if case .zlib = mode { compressedRaw = 2 * rawBytes } else { compressedRaw = 0 }   // deflate here, inflate there, and back
        links.record(peer: peer, wireBytes: 2 * reply.wireBytes, rawBytes: compressedRaw, seconds: took.seconds)
    }
}
