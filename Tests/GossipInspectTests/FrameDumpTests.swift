// framedump's library side: hand-written pcap files (documented libpcap format) in several
// link types and byte orders, TCP reassembly with split, reordered and retransmitted
// segments, and exact formatter output.
import Foundation
import Testing
import GossipInspect
import GossipWire

/// Writes a classic pcap file by hand.
struct PcapWriter {
    var bigEndian = false
    var nano = false
    var linkType: UInt32
    var bytes: [UInt8] = []

    init(linkType: UInt32, bigEndian: Bool = false, nano: Bool = false) {
        self.linkType = linkType; self.bigEndian = bigEndian; self.nano = nano
        u32(nano ? 0xa1b2_3c4d : 0xa1b2_c3d4); u16(2); u16(4); u32(0); u32(0); u32(65535); u32(linkType)
    }
    mutating func u16(_ v: UInt16) { let x = bigEndian ? v.bigEndian : v.littleEndian; withUnsafeBytes(of: x) { bytes += $0 } }
    mutating func u32(_ v: UInt32) { let x = bigEndian ? v.bigEndian : v.littleEndian; withUnsafeBytes(of: x) { bytes += $0 } }

    mutating func packet(_ p: [UInt8]) {
        u32(1_700_000_000); u32(0); u32(UInt32(p.count)); u32(UInt32(p.count)); bytes += p
    }
}

func be16(_ v: Int) -> [UInt8] { [UInt8(v >> 8 & 0xff), UInt8(v & 0xff)] }
func be32(_ v: UInt32) -> [UInt8] { [UInt8(v >> 24), UInt8(v >> 16 & 0xff), UInt8(v >> 8 & 0xff), UInt8(v & 0xff)] }

func tcp(_ sport: Int, _ dport: Int, seq: UInt32, flags: UInt8 = 0x18, _ data: [UInt8]) -> [UInt8] {
    be16(sport) + be16(dport) + be32(seq) + be32(0) + [0x50, flags] + be16(65535) + [0, 0, 0, 0] + data
}

func ipv4(_ src: [UInt8], _ dst: [UInt8], _ tcp: [UInt8]) -> [UInt8] {
    [0x45, 0] + be16(20 + tcp.count) + [0, 0, 0x40, 0, 64, 6, 0, 0] + src + dst + tcp
}

private func ipv6(_ tcp: [UInt8]) -> [UInt8] {
    [0x60, 0, 0, 0] + be16(tcp.count) + [6, 64] + [UInt8](repeating: 0, count: 15) + [1] + [UInt8](repeating: 0, count: 15) + [1] + tcp
}

private let a: [UInt8] = [10, 0, 0, 1], b: [UInt8] = [10, 0, 0, 2]

/// A request from a:5000 to b:7001 and its reply, in segments split mid-frame; the request's
/// second and third segments arrive swapped and the first is retransmitted.
private func conversation(wrap: ([UInt8]) -> [UInt8], link: UInt32, bigEndian: Bool = false, nano: Bool = false) throws -> [UInt8] {
    let req = try Vectors.bytes("gossip_exchange_request_chunked")
    let rep = try Vectors.bytes("error_busy")
    var w = PcapWriter(linkType: link, bigEndian: bigEndian, nano: nano)
    let isn: UInt32 = 0xffff_ff00   // wraps around 2^32 mid-stream
    w.packet(wrap(ipv4(a, b, tcp(5000, 7001, seq: isn, flags: 0x02, []))))       // SYN
    w.packet(wrap(ipv4(b, a, tcp(7001, 5000, seq: 77, flags: 0x12, []))))        // SYN-ACK
    let cuts = [0, 30, 150, 300, req.count]
    let segs = (0..<4).map { i in tcp(5000, 7001, seq: isn &+ 1 &+ UInt32(cuts[i]), Array(req[cuts[i]..<cuts[i + 1]])) }
    w.packet(wrap(ipv4(a, b, segs[0])))
    w.packet(wrap(ipv4(a, b, segs[2])))      // out of order
    w.packet(wrap(ipv4(a, b, segs[0])))      // retransmission
    w.packet(wrap(ipv4(a, b, segs[1])))
    w.packet(wrap(ipv4(b, a, tcp(7001, 5000, seq: 78, Array(rep[0..<10])))))
    w.packet(wrap(ipv4(a, b, segs[3])))
    w.packet(wrap(ipv4(b, a, tcp(7001, 5000, seq: 88, Array(rep[10...])))))
    w.packet(wrap(ipv4(b, a, tcp(7001, 5000, seq: 78, flags: 0x10, []))))        // bare ACK
    return w.bytes
}

private func checkConversation(_ capture: [UInt8]) throws {
    let streams = try FrameDump.decodeInput(capture)
    try #require(streams.count == 2)
    #expect(streams[0].direction == "10.0.0.1:5000 > 10.0.0.2:7001")
    #expect(streams[1].direction == "10.0.0.2:7001 > 10.0.0.1:5000")
    #expect(streams.allSatisfy { $0.error == nil && !$0.hasGap })
    #expect(streams[0].records.count == 4)
    #expect(streams[0].records.map(\.header.requestID) == [4, 4, 4, 4])
    if case .success(.gossipExchangeRequest(let r))? = streams[0].records[3].body {
        #expect(try r.model == Vectors.model())
    } else { Issue.record("request body not decoded") }
    #expect(streams[1].records.count == 1)
    #expect(FrameDump.line(streams[1].records[0]) ==
            "@0 10.0.0.2:7001 > 10.0.0.1:5000 GossipExchange error id=3 flags=R|E|END|C len=78 raw=54/54 status=ABORTED(10)")
}

@Test func pcapEthernetIPv4() throws {
    try checkConversation(conversation(wrap: { [UInt8](repeating: 0xaa, count: 12) + [0x08, 0x00] + $0 }, link: 1))
}

@Test func pcapEthernetVLANBigEndianNano() throws {
    let wrap: ([UInt8]) -> [UInt8] = { [UInt8](repeating: 0xaa, count: 12) + [0x81, 0x00, 0, 5, 0x08, 0x00] + $0 }
    try checkConversation(conversation(wrap: wrap, link: 1, bigEndian: true, nano: true))
}

@Test func pcapLoopbackNullAndLoop() throws {
    try checkConversation(conversation(wrap: { [2, 0, 0, 0] + $0 }, link: 0))
    try checkConversation(conversation(wrap: { [0, 0, 0, 2] + $0 }, link: 108, bigEndian: true))
}

@Test func pcapLinuxCookedAndRawIP() throws {
    try checkConversation(conversation(wrap: { [0, 0, 3, 4, 0, 6] + [UInt8](repeating: 0, count: 8) + [0x08, 0x00] + $0 }, link: 113))
    try checkConversation(conversation(wrap: { [0x08, 0x00, 0, 0] + [UInt8](repeating: 0, count: 16) + $0 }, link: 276))
    try checkConversation(conversation(wrap: { $0 }, link: 101))
}

@Test func pcapIPv6() throws {
    let frame = try Vectors.bytes("ping_request")
    var w = PcapWriter(linkType: 101)
    w.packet(ipv6(tcp(5000, 7001, seq: 1, Array(frame[0..<5]))))
    w.packet(ipv6(tcp(5000, 7001, seq: 6, Array(frame[5...]))))
    let s = try FrameDump.decodeInput(w.bytes)
    #expect(s.count == 1 && s[0].direction == "[::1]:5000 > [::1]:7001")
    #expect(s.first?.records.count == 1)
}

@Test func pcapRejectsUnknownLinkTypeAndPcapng() {
    let w = PcapWriter(linkType: 147)
    #expect(throws: PcapError.self) { try FrameDump.decodeInput(w.bytes) }
    #expect(throws: PcapError.self) { try Pcap.tcpSegments([0x0a, 0x0d, 0x0d, 0x0a] + [UInt8](repeating: 0, count: 24)) }
}

@Test func formatterExactLines() throws {
    // The compressed frame comes from its vector file: its length depends on the zlib version.
    let bytes = try Vectors.bytes("register_request")
        + Vectors.bytes("getmodel_reply_zlib_shuffle")
    let (records, error) = FrameDump.decode(bytes)
    #expect(error == nil)
    #expect(records.map(FrameDump.line) == [
        "@0 Register request id=1 flags=END|C len=48 raw=24/24",
        "@48 GetModel reply id=2 flags=Z|S|R|END|C len=133 raw=224/224",
    ])
    #expect(FrameDump.json(records[0], verbose: true) ==
            #"{"offset":0,"type":"Register","type_num":1,"kind":"request","request_id":1,"flags":"END|C","frame_length":48,"chunk_raw_length":24,"message_raw_length":24,"checksum":1016893843,"body":{"endpoint":"\"127.0.0.1:7001\"","schema_hash":"0x25958d0cab31add1"}}"#)
    let tree = FrameDump.tree(records[1])
    #expect(tree.contains("    tensor layers.0.weight: F32 [2, 3] min=-1.25 max=3.5 mean=0.802083 nan=0 inf=0\n"))
    #expect(FrameDump.hex(records[0]) == "  header:  30 00 00 00 02 30 01 00 01 00 00 00 18 00 00 00 18 00 00 00 93 91 9c 3c\n  payload: 0e 00 31 32 37 2e 30 2e 30 2e 31 3a 37 30 30 31 d1 ad 31 ab 0c 8d 95 25\n")
}

/// Peer lists (SPEC §5, version 2): every entry shows its identity as 64 hex digits, or
/// `unknown` for the all-zero identity.
@Test func formatterShowsPeerIdentities() throws {
    let (records, error) = FrameDump.decode(try Vectors.bytes("register_reply") + Vectors.bytes("gossip_exchange_reply"))
    #expect(error == nil && records.count == 2)
    let peers = "[127.0.0.1:7002 id=8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a, 127.0.0.1:7003 id=unknown]"
    for r in records {
        guard case .success(let body)? = r.body else { Issue.record("not decoded: \(r)"); continue }
        #expect(FrameDump.fields(body).first { $0.0 == "peers" }?.1 == peers)
        #expect(FrameDump.tree(r).contains("peers: \(peers)"), "\(FrameDump.tree(r))")
    }
}

@Test func formatterReportsMalformedOffset() throws {
    var bytes = try Vectors.bytes("ping_request")
    bytes += [0x30, 0, 0, 0, 9]     // next frame claims version 9
    bytes += [UInt8](repeating: 0, count: 19)
    let (records, error) = FrameDump.decode(bytes)
    #expect(records.count == 1)
    #expect(error?.kind == .unsupportedVersion && error?.offset == 36)
}

@Test func tensorSummaryCountsNaNAndInf() {
    let v: [Float] = [1, .nan, -2, .infinity, 4]
    let s = v.withUnsafeBytes { TensorSummary($0) }
    #expect(s.count == 5 && s.min == -2 && s.max == 4 && s.mean == 1 && s.nan == 1 && s.inf == 1)
}

/// The frames of the named golden vectors sent back to back, as FrameDump decodes them.
private func vectorRecords(_ names: [String]) throws -> [FrameRecord] {
    var bytes: [UInt8] = []
    for n in names {
        bytes += try Vectors.bytes(n)
    }
    let (records, error) = FrameDump.decode(bytes)
    #expect(error == nil)
    return records
}

/// A real tcpdump capture on Linux loopback (Fixtures/README.md): Ethernet link type, real
/// handshake, ACKs, timestamps options, frames split across segments in both directions.
@Test func realLoopbackCapture() throws {
    let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures/loopback.pcap")
    let capture = try [UInt8](Data(contentsOf: url))
    #expect(Pcap.isPcap(capture))
    let streams = try FrameDump.decodeInput(capture)
    try #require(streams.count == 2)
    #expect(streams[0].direction == "127.0.0.1:55514 > 127.0.0.1:47001")
    #expect(streams[1].direction == "127.0.0.1:47001 > 127.0.0.1:55514")
    #expect(streams.allSatisfy { $0.error == nil && !$0.hasGap })
    let up = try vectorRecords(["register_request", "getmodel_request", "gossip_exchange_request_chunked", "ping_request"])
    let down = try vectorRecords(["register_reply", "getmodel_reply_zlib_shuffle", "gossip_exchange_reply", "ping_reply"])
    for (stream, expected) in [(streams[0], up), (streams[1], down)] {
        #expect(stream.records.map(\.header) == expected.map(\.header))
        #expect(stream.records.count == expected.count)
        #expect(stream.records.map(\.offset) == expected.map(\.offset))
        #expect(stream.records.map(\.payloadHead) == expected.map(\.payloadHead))
        for (got, want) in zip(stream.records, expected) {
            switch (got.body, want.body) {
            case (.success(let a)?, .success(let b)?): #expect(a == b)
            case (nil, nil): break
            default: Issue.record("body differs at @\(got.offset): \(String(describing: got.body)) vs \(String(describing: want.body))")
            }
        }
    }
    #expect(streams[0].records.map { FrameDump.line($0) }.first == "@0 127.0.0.1:55514 > 127.0.0.1:47001 Register request id=1 flags=END|C len=48 raw=24/24")
    if case .success(.getModelReply(let m))? = streams[1].records[1].body {
        #expect(try m == Vectors.model())
    } else { Issue.record("GetModel reply not decoded from the capture") }
}

/// A tcpdump capture of a real gossipd network (bootstrap + 2 peers, 4,8,3 model): every
/// frame decodes, every message type the network uses shows up both ways, and the exchanged
/// models carry the 4,8,3 schema.
@Test func realGossipdCapture() throws {
    let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures/gossipd-network.pcap")
    let streams = try FrameDump.decodeInput(try [UInt8](Data(contentsOf: url)))
    #expect(streams.count >= 8)
    #expect(streams.allSatisfy { $0.error == nil && !$0.hasGap }, "\(streams.compactMap(\.error))")
    let records = streams.flatMap(\.records)
    for type in [MessageType.register, .getModel, .gossipExchange, .ping, .triggerGossip] {
        #expect(records.contains { $0.header.type == type && !$0.header.flags.contains(.response) }, "no \(type) request")
        #expect(records.contains { $0.header.type == type && $0.header.flags.contains(.response) }, "no \(type) reply")
    }
    let hash = TensorTable(tensors: [TensorInfo(name: "layers.0.weight", shape: [8, 4]), TensorInfo(name: "layers.0.bias", shape: [8]),
                                     TensorInfo(name: "layers.1.weight", shape: [3, 8]), TensorInfo(name: "layers.1.bias", shape: [3])]).schemaHash
    var exchanges = 0
    for r in records {
        if case .success(.gossipExchangeReply(let reply))? = r.body {
            #expect(reply.model.table.schemaHash == hash && reply.model.architecture == "4,8,3")
            exchanges += 1
        }
    }
    #expect(exchanges >= 10)
}

/// framedump shows Reserve (SPEC §5.6) readably: its fields, the empty reply, the busy error.
@Test func formatterShowsReserve() throws {
    let (records, error) = FrameDump.decode(try Vectors.bytes("reserve_request") + Vectors.bytes("reserve_reply")
                                            + Vectors.bytes("error_reserve_busy"))
    #expect(error == nil && records.count == 3)
    #expect(records.map(FrameDump.line) == [
        "@0 Reserve request id=12 flags=END|C len=52 raw=28/28",
        "@52 Reserve reply id=12 flags=R|END|C len=24 raw=0/0",
        "@76 Reserve error id=12 flags=R|E|END|C len=82 raw=58/58 status=ABORTED(10)",
    ])
    guard case .success(let body)? = records[0].body else { Issue.record("not decoded: \(records[0])"); return }
    #expect(FrameDump.fields(body).map { "\($0.0)=\($0.1)" } == [#"sender="127.0.0.1:7001""#, "schema_hash=0x25958d0cab31add1", "lease_ms=2000"])
}
