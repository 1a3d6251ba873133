// framedump's logic: decodes a byte stream into frame records (header, offset, and for the
// last frame of each message its decoded body), and formats them as one line, a field tree,
// hex, or JSON. Tensor data is summarised (min/max/mean, NaN/Inf counts), never dumped.
import GossipWire

/// One decoded frame, with its message's body when this frame ends the message.
public struct FrameRecord {
    public var header: FrameHeader
    public var offset: Int
    public var direction: String?
    /// The first bytes of the payload as sent (for `-x`).
    public var payloadHead: [UInt8]
    /// The decoded message body (END_STREAM frames only), or the body decode error.
    public var body: Result<MessageBody, WireError>?
}

/// Statistics of float32 tensor data.
public struct TensorSummary: Equatable {
    public var count: Int, min: Float, max: Float, mean: Double, nan: Int, inf: Int

    public init(_ bytes: UnsafeRawBufferPointer) {
        var mn = Float.infinity, mx = -Float.infinity, sum = 0.0, nan = 0, inf = 0, finite = 0
        let n = bytes.count / 4
        for i in 0..<n {
            let v = Float(bitPattern: UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self)))
            if v.isNaN { nan += 1; continue }
            if v.isInfinite { inf += 1; continue }
            mn = Swift.min(mn, v); mx = Swift.max(mx, v); sum += Double(v); finite += 1
        }
        self.count = n
        self.min = finite > 0 ? mn : .nan
        self.max = finite > 0 ? mx : .nan
        self.mean = finite > 0 ? sum / Double(finite) : .nan
        self.nan = nan
        self.inf = inf
    }
}

public enum FrameDump {
    /// Decodes every frame of `bytes`. Returns the records up to the first malformed frame and
    /// that frame's error (offsets are stream offsets).
    public static func decode(_ bytes: [UInt8], direction: String? = nil, limits: Limits = .default,
                              headBytes: Int = 64) -> (records: [FrameRecord], error: WireError?) {
        let live = LiveFrameDump(direction: direction, limits: limits, headBytes: headBytes)
        let records = live.feed(bytes)
        live.finish()
        return (records, live.error)
    }

    static func kindName(_ f: FrameFlags) -> String {
        f.contains(.error) ? "error" : (f.contains(.response) ? "reply" : "request")
    }

    /// A record as framedump prints it: a JSON line, or a line (or field tree with `verbose`)
    /// followed by the hex dump with `hex`. Always ends with a newline.
    public static func render(_ r: FrameRecord, verbose: Bool, hex: Bool, json: Bool) -> String {
        if json { return self.json(r, verbose: verbose) + "\n" }
        return (verbose ? tree(r) : line(r) + "\n") + (hex ? self.hex(r) : "")
    }

    /// One line: offset, direction, type, kind, id, flags, sizes, and the status of errors.
    public static func line(_ r: FrameRecord) -> String {
        let h = r.header
        var s = "@\(r.offset)"
        if let d = r.direction { s += " \(d)" }
        s += " \(h.type.name) \(kindName(h.flags)) id=\(h.requestID) flags=\(h.flags) len=\(h.frameLength) raw=\(h.chunkRawLength)/\(h.messageRawLength)"
        if case .success(.error(_, let e))? = r.body { s += " status=\(e.code.name)(\(e.code.rawValue))" }
        if case .failure(let e)? = r.body { s += " body-error=\(e.kind.rawValue)" }
        return s
    }

    /// A field tree: header fields, then the decoded body fields.
    public static func tree(_ r: FrameRecord) -> String {
        let h = r.header
        var out = line(r) + "\n"
        out += "  frame_length: \(h.frameLength)\n  version: \(h.version)\n"
        out += "  flags: 0x\(hex2(h.flags.rawValue)) \(h.flags)\n  message_type: \(h.type.rawValue) \(h.type.name)\n"
        out += "  request_id: \(h.requestID)\n  chunk_raw_length: \(h.chunkRawLength)\n"
        out += "  message_raw_length: \(h.messageRawLength)\n  checksum: 0x\(String(h.checksum, radix: 16))\n"
        switch r.body {
        case .success(let b)?: out += "  body:\n" + fields(b).map { "    \($0.0): \($0.1)\n" }.joined()
        case .failure(let e)?: out += "  body: error \(e)\n"
        case nil: break
        }
        return out
    }

    /// Header and payload head in hex.
    public static func hex(_ r: FrameRecord) -> String {
        "  header:  " + hexBytes(r.header.bytes) + "\n  payload: " + hexBytes(r.payloadHead)
            + (r.payloadHead.count < r.header.payloadLength ? " ..." : "") + "\n"
    }

    /// One JSON object (no newline).
    public static func json(_ r: FrameRecord, verbose: Bool) -> String {
        let h = r.header
        var o: [(String, String)] = [
            ("offset", "\(r.offset)"),
        ]
        if let d = r.direction { o.append(("direction", quote(d))) }
        o += [("type", quote(h.type.name)), ("type_num", "\(h.type.rawValue)"), ("kind", quote(kindName(h.flags))),
              ("request_id", "\(h.requestID)"), ("flags", quote("\(h.flags)")), ("frame_length", "\(h.frameLength)"),
              ("chunk_raw_length", "\(h.chunkRawLength)"), ("message_raw_length", "\(h.messageRawLength)"),
              ("checksum", "\(h.checksum)")]
        if case .success(.error(_, let e))? = r.body { o += [("status", quote(e.code.name)), ("status_code", "\(e.code.rawValue)")] }
        if case .failure(let e)? = r.body { o.append(("body_error", quote(e.description))) }
        if verbose, case .success(let b)? = r.body {
            o.append(("body", "{" + fields(b).map { quote($0.0) + ":" + quote($0.1) }.joined(separator: ",") + "}"))
        }
        return "{" + o.map { quote($0.0) + ":" + $0.1 }.joined(separator: ",") + "}"
    }

    /// The body's fields as (name, value text); tensors as summaries.
    public static func fields(_ b: MessageBody) -> [(String, String)] {
        // Each entry as `HOST:PORT id=<64 hex>`, or `id=unknown` for the all-zero identity.
        func peers(_ p: PeerList) -> String {
            "[" + p.entries.map { e in
                e.endpoint + " id=" + (e.identity.map { $0.map(hex2).joined() } ?? "unknown")
            }.joined(separator: ", ") + "]"
        }
        func model(_ m: ModelState) -> [(String, String)] {
            var f: [(String, String)] = [("architecture", quote(m.architecture)), ("round", "\(m.round)"),
                                         ("step", "\(m.step)"), ("samples", "\(m.samples)"),
                                         ("schema_hash", "0x" + String(m.table.schemaHash, radix: 16)),
                                         ("tensors", "\(m.table.tensors.count)")]
            for (i, t) in m.table.tensors.enumerated() {
                let s = m.tensorData(i).withUnsafeBytes { TensorSummary($0) }
                f.append(("tensor \(t.name)", "\(t.dtype.hashName) \(t.shape) min=\(s.min) max=\(s.max) mean=\(fmt(s.mean)) nan=\(s.nan) inf=\(s.inf)"))
            }
            return f
        }
        switch b {
        case .registerRequest(let m): return [("endpoint", quote(m.endpoint)), ("schema_hash", "0x" + String(m.schemaHash, radix: 16))]
        case .registerReply(let m): return [("peers", peers(m.peers)), ("architecture", quote(m.architecture)), ("schema_hash", "0x" + String(m.schemaHash, radix: 16))]
        case .getModelRequest(let m): return [("schema_hash", "0x" + String(m.schemaHash, radix: 16))]
        case .getModelReply(let m): return model(m)
        case .gossipExchangeRequest(let m): return [("sender", quote(m.sender)), ("weight", "\(m.weight)")] + model(m.model)
        case .gossipExchangeReply(let m): return [("weight", "\(m.weight)"), ("peers", peers(m.peers))] + model(m.model)
        case .statusRequest, .stopRequest, .stopReply, .pushSumReply, .reserveReply: return []
        case .statusReply(let m), .triggerGossipReply(let m): return [("json", m.json)]
        case .pingRequest(let p), .pingReply(let p): return [("bytes", hexBytes(Array(p.array.prefix(32))) + (p.count > 32 ? " ..." : ""))]
        case .triggerGossipRequest(let m): return [("peer", quote(m.peer))]
        case .pushSumRequest(let m): return [("sender", quote(m.sender)), ("mass", "\(m.mass)")] + model(m.model)
        case .reserveRequest(let m): return [("sender", quote(m.sender)), ("schema_hash", "0x" + String(m.schemaHash, radix: 16)), ("lease_ms", "\(m.leaseMs)")]
        case .votesRequest(let m), .votesReply(let m):
            return [("sender", quote(m.sender)), ("finished", m.finished ? "true" : "false"),
                    ("voters", "[" + m.voters.map(quote).joined(separator: ",") + "]")]
        case .waitConvergedRequest(let m): return [("timeout_ms", "\(m.timeoutMs)")]
        case .waitConvergedReply(let m): return [("json", m.json)]
        case .modelPullRequest(let m): return [("path", quote(m.path))]
        case .modelPullReply(let m):
            switch m.body {
            case .inline(let st): return [("version", "\(m.version)"), ("form", "inline")] + model(st)
            case .file(let n): return [("version", "\(m.version)"), ("form", "file"), ("byte_count", "\(n)")]
            }
        case .modelPushRequest(let m):
            return [("base_version", "\(m.baseVersion)"), ("samples", "\(m.samples)"), ("steps", "\(m.steps)"),
                    ("path", quote(m.path))] + (m.model.map(model) ?? [])
        case .modelPushReply(let m): return [("version", "\(m.version)"), ("relative_l2_change", "\(m.relativeL2Change)")]
        case .error(_, let e): return [("status", "\(e.code.name) (\(e.code.rawValue))"), ("message", quote(e.message))]
        }
    }

    static func fmt(_ d: Double) -> String {
        guard d.isFinite else { return "\(d)" }
        let scaled = (d * 1_000_000).rounded() / 1_000_000
        return "\(scaled)"
    }

    static func hex2(_ b: UInt8) -> String { b < 16 ? "0" + String(b, radix: 16) : String(b, radix: 16) }
    static func hexBytes(_ b: [UInt8]) -> String { b.map(hex2).joined(separator: " ") }

    /// A JSON string literal (GossipWire's one writer).
    public static func quote(_ s: String) -> String { JSONString.quote(s) }
}

/// The frames of one byte stream (a raw file, or one direction of a captured connection).
public struct DumpedStream {
    public var direction: String?
    /// The frames: of a plaintext stream, or decrypted from a Noise session's records.
    public var records: [FrameRecord]
    /// What to print, in stream order: Noise handshake messages and undecrypted records,
    /// and the frames (for a plaintext stream: exactly `records`).
    public var items: [DumpItem]
    /// The first malformed frame, if any (decoding of this stream stopped there).
    public var error: WireError?
    /// Why decoding of a Noise stream stopped (a record that failed authentication, a
    /// malformed record or handshake message, a stream cut short), if it did.
    public var noiseError: String?
    /// The Noise role of this direction, or nil for a plaintext stream.
    public var noiseRole: ConnectionDump.Role?
    /// True when the capture missed bytes of this stream.
    public var hasGap: Bool
}

extension FrameDump {
    /// Decodes a raw byte stream, or every TCP stream of a pcap capture (detected by magic).
    /// Each stream may be plaintext frames or a Noise session (SPEC §13): its handshake and
    /// records are shown, and with `keyLog` naming the session its records are opened and
    /// their frames decoded as in a plaintext stream. The two directions of a captured
    /// connection are read together (the initiator's ephemeral key finds the session).
    /// Empty directions (e.g. bare ACKs) are left out.
    /// - Parameter keyLog: nil: no key log (records show as "encrypted, no key log").
    public static func decodeInput(_ bytes: [UInt8], limits: Limits = .default,
                                   keyLog: NoiseKeyLog? = nil) throws(PcapError) -> [DumpedStream] {
        var provider: (@Sendable () -> NoiseKeyLog)?
        if let keyLog { provider = { keyLog } }
        guard Pcap.isPcap(bytes) else {
            return decodeConnection([(nil, bytes, false)], keyLog: provider, limits: limits)
        }
        let all = TCPReassembly.streams(try Pcap.tcpSegments(bytes))
        var results = [DumpedStream?](repeating: nil, count: all.count)
        for i in all.indices where results[i] == nil {
            let reverse = all.indices.first { j in
                j != i && results[j] == nil && all[j].source == all[i].destination && all[j].destination == all[i].source
            }
            let members = [i] + (reverse.map { [$0] } ?? [])
            let dumped = decodeConnection(members.map { (direction: Optional(all[$0].direction), bytes: all[$0].bytes, hasGap: all[$0].hasGap) },
                                          keyLog: provider, limits: limits)
            for (k, j) in members.enumerated() { results[j] = dumped[k] }
        }
        return zip(all, results).filter { !$0.0.bytes.isEmpty }.map { $0.1! }
    }

    /// Decodes the two directions of one connection from raw streams (for example the
    /// `PREFIX-N-c2s.bin` and `PREFIX-N-s2c.bin` files of `framedump proxy --record`),
    /// together: the initiator's ephemeral key finds the session in `keyLog` for both.
    /// - Returns: one `DumpedStream` per direction, `first` then `second`.
    public static func decodeConnection(first: [UInt8], second: [UInt8], directions: (String?, String?) = ("c>s", "s>c"),
                                        keyLog: NoiseKeyLog?, limits: Limits = .default) -> [DumpedStream] {
        var provider: (@Sendable () -> NoiseKeyLog)?
        if let keyLog { provider = { keyLog } }
        return decodeConnection([(directions.0, first, false), (directions.1, second, false)], keyLog: provider, limits: limits)
    }

    /// Decodes one connection's directions (one or two) together.
    static func decodeConnection(_ streams: [(direction: String?, bytes: [UInt8], hasGap: Bool)],
                                 keyLog: (@Sendable () -> NoiseKeyLog)?, limits: Limits) -> [DumpedStream] {
        let sides = Array(ConnectionDump.Side.allCases.prefix(streams.count))
        let conn = ConnectionDump(first: streams[0].direction, second: streams.count > 1 ? streams[1].direction : nil,
                                  keyLog: keyLog, limits: limits)
        var items: [[DumpItem]] = [[], []]
        for (side, s) in zip(sides, streams) {
            for o in conn.feed(s.bytes, from: side) { items[o.side.rawValue].append(o.item) }
        }
        for o in conn.finish() { items[o.side.rawValue].append(o.item) }
        return zip(sides, streams).map { side, s in
            let list = items[side.rawValue]
            return DumpedStream(direction: s.direction,
                                records: list.compactMap { if case .frame(let r) = $0 { r } else { nil } },
                                items: list, error: conn.frameError(side), noiseError: conn.noiseError(side),
                                noiseRole: conn.role(side), hasGap: s.hasGap)
        }
    }

    /// True when `r` passes the `--type` and `--request-id` filters (nil = any).
    public static func matches(_ r: FrameRecord, type: MessageType?, requestID: UInt32?) -> Bool {
        (type == nil || r.header.type == type!) && (requestID == nil || r.header.requestID == requestID!)
    }
}
