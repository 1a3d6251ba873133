// The Wireshark dissector (Protocol/gossip.lua) against framedump's decoder: tshark with the
// dissector reads every fixture capture, and each TCP direction must show the same frames
// (header fields, and the decoded body of each message's last frame) and the same Noise
// handshake messages and records, in the same order, as GossipInspect decodes from the
// same file. A hand-made capture of hostile frames must be refused with expert errors,
// never a Lua error. Skipped, with a message, where tshark is not installed.
import Foundation
import Testing
import GossipInspect
import GossipWire

/// tshark on PATH, or nil.
let tsharkPath: String? = {
    let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
    for dir in path.split(separator: ":") {
        let candidate = "\(dir)/tshark"
        if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
    }
    return nil
}()

private let testsDir = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
private let dissectorPath = testsDir.deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("Protocol/gossip.lua").path

struct TsharkError: Error, CustomStringConvertible { let description: String }

/// stderr of a tshark run, filled on another thread before `DispatchGroup.wait` returns.
private final class ErrBox: @unchecked Sendable { var value = "" }

/// Runs tshark with the dissector on `file`; returns stdout.
private func tshark(_ file: String, _ extra: [String]) throws -> String {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: tsharkPath!)
    p.arguments = ["-n", "-X", "lua_script:" + dissectorPath, "-o", "tcp.reassemble_out_of_order:TRUE", "-r", file] + extra
    // A private HOME so that a developer's own Wireshark preferences cannot change the output.
    let home = FileManager.default.temporaryDirectory.appendingPathComponent("gossip-tshark-home-\(getpid())")
    try FileManager.default.createDirectory(at: home, withIntermediateDirectories: true)
    var env = ProcessInfo.processInfo.environment
    env["HOME"] = home.path
    p.environment = env
    let out = Pipe(), err = Pipe()
    p.standardOutput = out
    p.standardError = err
    try p.run()
    // Read both pipes to their ends before waiting (a full pipe would block tshark).
    let errText = ErrBox()
    let group = DispatchGroup()
    DispatchQueue.global().async(group: group) {
        errText.value = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    }
    let data = out.fileHandleForReading.readDataToEndOfFile()
    group.wait()
    p.waitUntilExit()
    let stderr = errText.value
    guard p.terminationStatus == 0 else {
        throw TsharkError(description: "tshark exited \(p.terminationStatus) on \(file): \(stderr)")
    }
    if stderr.contains("Lua") || stderr.contains("lua_script") {
        throw TsharkError(description: "tshark reported a Lua problem with \(dissectorPath): \(stderr)")
    }
    return String(decoding: data, as: UTF8.self)
}

/// One PDU the dissector showed: its `gossip` object from tshark's JSON.
private typealias PDU = [String: Any]

/// tshark's JSON of a capture, as PDUs per TCP direction ("SRC:PORT > DST:PORT", framedump's
/// spelling), in capture order.
private func dissect(_ file: String) throws -> [String: [PDU]] {
    let text = try tshark(file, ["-T", "json", "--no-duplicate-keys"])
    #expect(!text.contains("Lua Error"), "the dissector raised a Lua error on \(file)")
    let packets = try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [[String: Any]])
    var result: [String: [PDU]] = [:]
    for packet in packets {
        guard let layers = (packet["_source"] as? [String: Any])?["layers"] as? [String: Any],
              let g = layers["gossip"] else { continue }
        let pdus: [PDU] = (g as? [PDU]) ?? [(g as? PDU) ?? [:]]
        let tcp = try #require(layers["tcp"] as? [String: Any])
        let direction: String
        if let ip = layers["ip"] as? [String: Any] {
            direction = "\(ip["ip.src"]!):\(tcp["tcp.srcport"]!) > \(ip["ip.dst"]!):\(tcp["tcp.dstport"]!)"
        } else {
            let ip = try #require(layers["ipv6"] as? [String: Any])
            direction = "[\(ip["ipv6.src"]!)]:\(tcp["tcp.srcport"]!) > [\(ip["ipv6.dst"]!)]:\(tcp["tcp.dstport"]!)"
        }
        result[direction, default: []] += pdus
    }
    return result
}

// Field access on tshark's JSON values (strings; a repeated field is an array of them).
private func str(_ o: PDU?, _ key: String) -> String? { o?[key] as? String }
private func list(_ o: PDU?, _ key: String) -> [Any] {
    guard let v = o?[key] else { return [] }
    return (v as? [Any]) ?? [v]
}
private func int(_ o: PDU?, _ key: String) -> UInt64? {
    guard let s = str(o, key) else { return nil }
    return s.hasPrefix("0x") ? UInt64(s.dropFirst(2), radix: 16) : UInt64(s)
}
private func double(_ o: PDU?, _ key: String) -> Double? { str(o, key).flatMap(Double.init) }
private func hexBytes(_ o: PDU?, _ key: String) -> String? { str(o, key)?.replacingOccurrences(of: ":", with: "") }
private func hex(_ b: [UInt8]) -> String { b.map { String(format: "%02x", $0) }.joined() }

/// True when two doubles agree to the 15 significant digits tshark prints.
private func close(_ a: Double?, _ b: Double) -> Bool {
    guard let a else { return false }
    return a == b || abs(a - b) <= 1e-13 * max(abs(a), abs(b))
}

private func checkPeers(_ body: PDU, _ peers: PeerList, _ at: String) {
    #expect(int(body, "gossip.peers.count") == UInt64(peers.entries.count), "\(at): peer count")
    let shown = list(body, "gossip.peer").compactMap { $0 as? PDU }
    #expect(shown.count == peers.entries.count, "\(at): peer entries")
    for (s, e) in zip(shown, peers.entries) {
        #expect(str(s, "gossip.peer.endpoint") == e.endpoint, "\(at): peer endpoint")
        #expect(hexBytes(s, "gossip.peer.identity") == hex(e.identity ?? [UInt8](repeating: 0, count: 32)), "\(at): identity of \(e.endpoint)")
        #expect(str(s, "gossip.peer.identity_known") == (e.identity == nil ? "0" : "1"), "\(at): identity known of \(e.endpoint)")
    }
}

private func checkModel(_ body: PDU, _ m: ModelState, _ at: String) throws {
    let model = try #require(body["gossip.model"] as? PDU, "\(at): no ModelState shown")
    #expect(str(model, "gossip.architecture") == m.architecture, "\(at): architecture")
    #expect(int(model, "gossip.model.round") == m.round && int(model, "gossip.model.step") == m.step
            && int(model, "gossip.model.samples") == m.samples, "\(at): counters")
    #expect(int(model, "gossip.model.schema_hash") == m.table.schemaHash, "\(at): schema hash")
    #expect(str(model, "gossip.model.schema_hash_ok") == "1", "\(at): the dissector's FNV-1a of the table (SPEC §6.3)")
    #expect(int(model, "gossip.model.tensor_count") == UInt64(m.table.tensors.count), "\(at): tensor count")
    #expect(int(model, "gossip.model.data_length") == UInt64(m.table.dataByteCount), "\(at): data length")
    let tensors = list(model, "gossip.tensor").compactMap { $0 as? PDU }
    #expect(tensors.count == m.table.tensors.count, "\(at): tensor entries")
    for (i, (t, info)) in zip(tensors, m.table.tensors).enumerated() {
        let where_ = "\(at): tensor \(info.name)"
        #expect(str(t, "gossip.tensor.name") == info.name, "\(where_): name")
        #expect(int(t, "gossip.tensor.dtype") == UInt64(info.dtype.rawValue), "\(where_): dtype")
        #expect(int(t, "gossip.tensor.rank") == UInt64(info.shape.count), "\(where_): rank")
        #expect(list(t, "gossip.tensor.dim").compactMap { ($0 as? String).flatMap { Int($0) } } == info.shape, "\(where_): dims")
        #expect(int(t, "gossip.tensor.byte_count") == UInt64(info.byteCount), "\(where_): byte count")
        // framedump's summary of the same bytes.
        let s = m.tensorData(i).withUnsafeBytes { TensorSummary($0) }
        #expect(int(t, "gossip.tensor.values") == UInt64(s.count), "\(where_): values")
        #expect(int(t, "gossip.tensor.nan") == UInt64(s.nan) && int(t, "gossip.tensor.inf") == UInt64(s.inf), "\(where_): NaN/Inf")
        if !s.min.isNaN {
            #expect(double(t, "gossip.tensor.min").map { Float($0) } == s.min, "\(where_): min")
            #expect(double(t, "gossip.tensor.max").map { Float($0) } == s.max, "\(where_): max")
            #expect(close(double(t, "gossip.tensor.mean"), s.mean), "\(where_): mean \(str(t, "gossip.tensor.mean") ?? "-") vs \(s.mean)")
        }
    }
}

/// The body fields the dissector showed against the body framedump decoded.
private func checkBody(_ body: PDU, _ b: MessageBody, _ at: String) throws {
    switch b {
    case .registerRequest(let m):
        #expect(str(body, "gossip.endpoint") == m.endpoint && int(body, "gossip.schema_hash") == m.schemaHash, "\(at)")
    case .registerReply(let m):
        checkPeers(body, m.peers, at)
        #expect(str(body, "gossip.architecture") == m.architecture && int(body, "gossip.schema_hash") == m.schemaHash, "\(at)")
    case .getModelRequest(let m):
        #expect(int(body, "gossip.schema_hash") == m.schemaHash, "\(at)")
    case .getModelReply(let m):
        try checkModel(body, m, at)
    case .gossipExchangeRequest(let m):
        #expect(str(body, "gossip.sender") == m.sender && close(double(body, "gossip.weight"), m.weight), "\(at)")
        try checkModel(body, m.model, at)
    case .gossipExchangeReply(let m):
        #expect(close(double(body, "gossip.weight"), m.weight), "\(at): weight")
        checkPeers(body, m.peers, at)
        try checkModel(body, m.model, at)
    case .statusRequest, .stopRequest, .stopReply, .pushSumReply, .reserveReply:
        #expect(body.isEmpty, "\(at): an empty body shows no fields, got \(body.keys.sorted())")
    case .statusReply(let m), .triggerGossipReply(let m), .waitConvergedReply(let m):
        #expect(str(body, "gossip.json") == m.json, "\(at): JSON text")
    case .pingRequest(let p), .pingReply(let p):
        #expect((hexBytes(body, "gossip.ping_bytes") ?? "") == hex(p.array), "\(at): ping bytes")
    case .triggerGossipRequest(let m):
        #expect(str(body, "gossip.target_peer") == m.peer, "\(at)")
    case .pushSumRequest(let m):
        #expect(str(body, "gossip.sender") == m.sender && close(double(body, "gossip.mass"), m.mass), "\(at)")
        try checkModel(body, m.model, at)
    case .reserveRequest(let m):
        #expect(str(body, "gossip.sender") == m.sender && int(body, "gossip.schema_hash") == m.schemaHash
                && int(body, "gossip.lease_ms") == UInt64(m.leaseMs), "\(at)")
    case .votesRequest(let m), .votesReply(let m):
        #expect(str(body, "gossip.sender") == m.sender && int(body, "gossip.votes.flags") == UInt64(m.flags), "\(at)")
        #expect(list(body, "gossip.votes.voter").compactMap { $0 as? String } == m.voters, "\(at): voters")
    case .waitConvergedRequest(let m):
        #expect(int(body, "gossip.timeout_ms") == UInt64(m.timeoutMs), "\(at)")
    case .modelPullRequest, .modelPullReply, .modelPushRequest, .modelPushReply:
        break   // control-socket messages (SPEC §5.12): the dissector shows their header only
    case .error(_, let e):
        #expect(int(body, "gossip.status") == UInt64(e.code.rawValue) && str(body, "gossip.error_message") == e.message, "\(at)")
    }
}

/// Compares one frame as the dissector showed it with framedump's record.
private func checkFrame(_ pdu: PDU, _ r: FrameRecord, _ at: String) throws {
    let h = r.header
    #expect(int(pdu, "gossip.frame_length") == UInt64(h.frameLength), "\(at): frame_length")
    #expect(int(pdu, "gossip.version") == UInt64(h.version), "\(at): version")
    #expect(int(pdu, "gossip.flags") == UInt64(h.flags.rawValue), "\(at): flags")
    #expect(int(pdu, "gossip.type") == UInt64(h.type.rawValue), "\(at): type")
    #expect(str(pdu, "gossip.kind") == (h.flags.contains(.error) ? "error" : h.flags.contains(.response) ? "reply" : "request"), "\(at): kind")
    #expect(int(pdu, "gossip.request_id") == UInt64(h.requestID), "\(at): request_id")
    #expect(int(pdu, "gossip.chunk_raw_length") == UInt64(h.chunkRawLength), "\(at): chunk_raw_length")
    #expect(int(pdu, "gossip.message_raw_length") == UInt64(h.messageRawLength), "\(at): message_raw_length")
    #expect(int(pdu, "gossip.checksum") == UInt64(h.checksum), "\(at): checksum")
    #expect(int(pdu, "gossip.payload_len") == UInt64(h.payloadLength), "\(at): payload_len")
    switch r.body {
    case nil:
        #expect(pdu["gossip.body"] == nil, "\(at): a frame before END_STREAM shows no body")
    case .failure(let e):
        Issue.record("\(at): framedump could not decode this body (\(e)); the fixtures hold well-formed messages")
    case .success(let b):
        let body = pdu["gossip.body"]
        // A body with no fields shows as an empty string.
        let fields = (body as? PDU) ?? [:]
        #expect(body != nil, "\(at): no body shown for a message's last frame")
        try checkBody(fields, b, at)
    }
}

private func checkNoise(_ pdu: PDU, _ n: NoiseItem, _ at: String) {
    #expect(int(pdu, "gossip.noise.length") == UInt64(n.length), "\(at): Noise length")
    switch n.kind {
    case .handshake(let message, let e):
        #expect(int(pdu, "gossip.noise.handshake") == UInt64(message), "\(at): handshake message number")
        #expect(pdu["gossip.noise.record"] == nil, "\(at): a handshake message shown as a record")
        if !e.isEmpty { #expect(hexBytes(pdu, "gossip.noise.ephemeral") == hex(e), "\(at): ephemeral key") }
    case .record(let number, _):
        #expect(int(pdu, "gossip.noise.record") == number, "\(at): record number")
        #expect(pdu["gossip.noise.handshake"] == nil, "\(at): a record shown as a handshake message")
    }
}

/// Runs the dissector and GossipInspect on one capture and compares every item.
private func compareWithFramedump(_ file: String) throws {
    let name = URL(fileURLWithPath: file).lastPathComponent
    let expected = try FrameDump.decodeInput(Array(try Data(contentsOf: URL(fileURLWithPath: file))))
    let shown = try dissect(file)
    let items = expected.reduce(0) { $0 + $1.items.count }
    try #require(items > 0, "framedump found nothing in \(name)")
    #expect(Set(shown.keys) == Set(expected.compactMap(\.direction)), "\(name): the directions tshark decoded")
    var compared = 0
    for stream in expected {
        let dir = try #require(stream.direction)
        let pdus = shown[dir] ?? []
        #expect(pdus.count == stream.items.count, "\(name) \(dir): tshark shows \(pdus.count) PDUs, framedump \(stream.items.count)")
        for (k, (pdu, item)) in zip(pdus, stream.items).enumerated() {
            let at = "\(name) \(dir) #\(k)"
            switch item {
            case .frame(let r): try checkFrame(pdu, r, at)
            case .noise(let n): checkNoise(pdu, n, at)
            }
            compared += 1
        }
    }
    #expect(compared == items, "\(name): compared \(compared) of \(items) items")
}

@Suite(.enabled(if: tsharkPath != nil, "tshark is not installed (Debian: apt-get install tshark), so Protocol/gossip.lua is not checked"))
struct DissectorTests {
    /// Every fixture capture: same directions, same items in the same order, same fields.
    @Test(arguments: ["loopback.pcap", "gossipd-network.pcap", "noise-session.pcap"])
    func dissectorMatchesFramedump(_ name: String) throws {
        try compareWithFramedump(testsDir.appendingPathComponent("Fixtures/\(name)").path)
    }

    /// A model the size of a small real one (a 512x512 layer, 1 MiB of weights), encoded by
    /// GossipWire as a node sends it: a GossipExchange reply in 256 KiB chunks, each deflated
    /// and byte-shuffled, in 60,000-byte TCP segments that cut through frames. The dissector
    /// must reassemble, inflate and unshuffle every chunk and summarise the same values.
    @Test func chunkedCompressedModelMatchesFramedump() throws {
        let table = TensorTable(tensors: [TensorInfo(name: "layers.0.weight", shape: [512, 512]),
                                          TensorInfo(name: "layers.0.bias", shape: [512])])
        var weights = [Float](repeating: 0, count: table.dataByteCount / 4)
        var x: UInt32 = 12345
        for i in weights.indices {
            x = x &* 1_664_525 &+ 1_013_904_223
            weights[i] = Float(Int32(bitPattern: x) >> 8) / 1e7
        }
        weights[7] = .nan
        weights[9] = -.infinity
        let peers = PeerList(entries: [PeerEntry(endpoint: "127.0.0.1:7002", identity: [UInt8](repeating: 0xab, count: 32))])
        let payload = try weights.withUnsafeBytes {
            try GossipExchangeReply.encode(weight: 1234.5, peers: peers, architecture: "512,512", round: 9, step: 90,
                                           samples: 11520, table: table, data: $0)
        }
        var limits = Limits()
        limits.chunkBytes = 256 << 10
        let reply = try OutboundMessage(type: .gossipExchange, kind: .response, requestID: 77, payload: payload,
                                        compression: .zlib(level: 1, shuffle: true), checksum: false, limits: limits)
        #expect(reply.frames.count == 5)
        let request = try Vectors.bytes("reserve_request")
        let stream = reply.serialized()
        var w = PcapWriter(linkType: 101)
        let a: [UInt8] = [10, 0, 0, 1], b: [UInt8] = [10, 0, 0, 2]
        w.packet(ipv4(a, b, tcp(40000, 7001, seq: 100, flags: 0x02, [])))
        w.packet(ipv4(b, a, tcp(7001, 40000, seq: 500, flags: 0x12, [])))
        w.packet(ipv4(a, b, tcp(40000, 7001, seq: 101, request)))
        var off = 0
        while off < stream.count {
            let end = min(stream.count, off + 60_000)
            w.packet(ipv4(b, a, tcp(7001, 40000, seq: 501 + UInt32(off), Array(stream[off..<end]))))
            off = end
        }
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("gossip-model-\(getpid()).pcap")
        try Data(w.bytes).write(to: file)
        defer { try? FileManager.default.removeItem(at: file) }
        try compareWithFramedump(file.path)
    }

    /// Captures of your own, compared the same way: GOSSIP_DISSECTOR_CAPTURES=a.pcap:b.pcap
    /// (for example `tcpdump -i lo -w a.pcap 'tcp portrange 7000-7009'` around a demo).
    @Test(.enabled(if: ProcessInfo.processInfo.environment["GOSSIP_DISSECTOR_CAPTURES"] != nil,
                   "set GOSSIP_DISSECTOR_CAPTURES=FILE[:FILE...] to compare captures of your own"))
    func capturesFromTheEnvironment() throws {
        for file in ProcessInfo.processInfo.environment["GOSSIP_DISSECTOR_CAPTURES"]!.split(separator: ":") {
            try compareWithFramedump(String(file))
        }
    }

    /// The fixtures' shape, so that a dissector (or capture) that finds nothing cannot pass:
    /// loopback.pcap carries 6 frames each way in 4 messages, the Noise session 3 handshake
    /// messages and 14 records, gossipd-network.pcap every message type a network uses.
    @Test func fixtureCounts() throws {
        let dir = testsDir.appendingPathComponent("Fixtures")
        let loop = try dissect(dir.appendingPathComponent("loopback.pcap").path)
        #expect(loop.values.map(\.count).sorted() == [4, 7])
        let noise = try dissect(dir.appendingPathComponent("noise-session.pcap").path).values.flatMap { $0 }
        #expect(noise.filter { $0["gossip.noise.handshake"] != nil }.count == 3)
        #expect(noise.filter { $0["gossip.noise.record"] != nil }.count > 0)
        let net = try dissect(dir.appendingPathComponent("gossipd-network.pcap").path).values.flatMap { $0 }
        let types = Set(net.compactMap { int($0, "gossip.type") })
        #expect(types.isSuperset(of: [1, 2, 3, 5, 7]), "types seen: \(types.sorted())")
    }

    /// Hostile frames are refused with expert errors, never a Lua error or a crash: a peer
    /// count that cannot fit, a corrupt zlib stream, a frame length below the header size.
    @Test func hostileFramesAreRefused() throws {
        func frame(flags: UInt8, type: UInt16, id: UInt32, chunkRaw: Int? = nil, _ payload: [UInt8]) -> [UInt8] {
            func le32(_ v: Int) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }
            let raw = chunkRaw ?? payload.count
            return le32(24 + payload.count) + [2, flags] + [UInt8(type & 0xff), UInt8(type >> 8)] + le32(Int(id))
                + le32(raw) + le32(raw) + le32(0) + payload
        }
        let hugePeers = frame(flags: 0x14, type: 1, id: 1, [0x40, 0x42, 0x0f, 0x00] + [UInt8](repeating: 7, count: 40))
        let badZlib = frame(flags: 0x15, type: 4, id: 2, chunkRaw: 100, [0x78, 0x9c, 0xff, 0xff, 0xff, 0xff, 0x00, 0x01])
        let short = [0x10, 0, 0, 0, 2, 0x10, 1, 0] + [UInt8](repeating: 0, count: 16)
        let client = frame(flags: 0x10, type: 4, id: 1, [])
        let server = hugePeers + badZlib + short
        var w = PcapWriter(linkType: 101)
        let a: [UInt8] = [10, 0, 0, 1], b: [UInt8] = [10, 0, 0, 2]
        w.packet(ipv4(a, b, tcp(40000, 7001, seq: 100, flags: 0x02, [])))
        w.packet(ipv4(b, a, tcp(7001, 40000, seq: 500, flags: 0x12, [])))
        w.packet(ipv4(a, b, tcp(40000, 7001, seq: 101, client)))
        w.packet(ipv4(b, a, tcp(7001, 40000, seq: 501, server)))
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("gossip-hostile-\(getpid()).pcap")
        try Data(w.bytes).write(to: file)
        defer { try? FileManager.default.removeItem(at: file) }
        let text = try tshark(file.path, ["-V"])
        #expect(!text.contains("Lua Error"), "\(text)")
        #expect(text.contains("peer count 1000000 cannot fit in the 40 bytes left"), "\(text)")
        #expect(text.contains("corrupt zlib stream"), "\(text)")
        #expect(text.contains("frame_length 16 is below the 24-byte header"), "\(text)")
    }
}
