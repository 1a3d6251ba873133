// How a peer compresses the model payloads it sends: the fixed `--compression`, or under
// `--compression auto` the per-peer choice of LinkChooser.swift (measured link vs codec).
import GossipWire

extension PeerNode {
    /// Compression for a model payload this node sends to `peer` on its own initiative
    /// (an exchange request, a push).
    func sendCompression(to peer: String, params: [Float]) -> CompressionMode {
        guard config.autoCompression else { return config.compression }
        if links.needsCalibration {
            let sample = Swift.min(params.count * 4, 4 << 20)
            let chunks = (params.count * 4 + (4 << 20) - 1) / (4 << 20)
            if let c = params.withUnsafeBytes({ CodecSpeed.measure(UnsafeRawBufferPointer(rebasing: $0[0..<sample]), chunks: chunks) }) {
                links.setCodec(c)
                logger.debug("codec measured", metadata: ["codec_mb_per_s": "\(c.codecMBps)", "ratio": "\(c.ratio)",
                                                          "compress_below_mb_per_s": "\(CompressionChoice.breakEvenMBps(codecMBps: c.codecMBps, ratio: c.ratio))"])
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
