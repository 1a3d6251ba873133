// framedump on encrypted traffic (issue 9 point 6): Noise sessions made in memory
// (NoiseSessions.swift) around the golden frames, read as raw streams, as a pcap capture and
// live in pieces; without a key log (handshake and record sizes), with one (the same frames
// as the plaintext session), with a wrong one, with altered bytes, across a Rekey, and with
// hostile input.
import Foundation
import Testing
import GossipInspect
import GossipSecure
import GossipWire

private let upNames = ["register_request", "getmodel_request", "gossip_exchange_request_chunked", "ping_request"]
private let downNames = ["register_reply", "getmodel_reply_zlib_shuffle", "gossip_exchange_reply", "ping_reply"]

private func stream(_ names: [String]) throws -> [UInt8] {
    try names.reduce(into: [UInt8]()) { $0 += try Vectors.bytes($1) }
}

/// Record sizes that cut through headers and payloads, put several frames in one record, and
/// include one-byte records.
private let upSizes = [7, 100, 1, 300, 5]
private let downSizes = [33, 1, 200]

private func session(seed: UInt8 = 1) throws -> NoiseSession {
    try NoiseSession.make(up: stream(upNames), down: stream(downNames), upSizes: upSizes, downSizes: downSizes, seed: seed)
}

private func logOf(_ sessions: NoiseSession...) -> NoiseKeyLog {
    NoiseKeyLog(text: "# gossipd key log\n" + sessions.map { NoiseKeyLog.line($0.keys) }.joined())
}

private func hex(_ b: [UInt8]) -> String { NoiseKeyLog.hexEncode(b) }

/// Checks that `got` are exactly the frames of the plaintext stream `names` (headers,
/// offsets, payload heads, bodies, formatted lines).
private func expectSameFrames(_ got: [FrameRecord], as names: [String], direction: String?,
                              sourceLocation: SourceLocation = #_sourceLocation) throws {
    let (want, error) = FrameDump.decode(try stream(names), direction: direction)
    #expect(error == nil, sourceLocation: sourceLocation)
    #expect(got.count == want.count, sourceLocation: sourceLocation)
    #expect(got.map(FrameDump.line) == want.map(FrameDump.line), sourceLocation: sourceLocation)
    #expect(got.map { FrameDump.json($0, verbose: true) } == want.map { FrameDump.json($0, verbose: true) }, sourceLocation: sourceLocation)
    #expect(got.map(\.payloadHead) == want.map(\.payloadHead), sourceLocation: sourceLocation)
    for (g, w) in zip(got, want) {
        switch (g.body, w.body) {
        case (.success(let a)?, .success(let b)?): #expect(a == b, sourceLocation: sourceLocation)
        case (nil, nil): break
        default: Issue.record("body differs at @\(g.offset)", sourceLocation: sourceLocation)
        }
    }
}

private func noiseItems(_ s: DumpedStream) -> [NoiseItem] {
    s.items.compactMap { if case .noise(let n) = $0 { n } else { nil } }
}

// MARK: - Without a key log

@Test func noiseInitiatorStreamWithoutKeyLog() throws {
    let s = try session()
    let streams = try FrameDump.decodeInput(s.initiatorStream)
    try #require(streams.count == 1)
    let d = streams[0]
    #expect(d.noiseRole == .initiator && d.records.isEmpty && d.error == nil && d.noiseError == nil)
    let items = noiseItems(d)
    #expect(items.count == 2 + s.initiatorRecords.count)
    let e = hex(s.keys.initiatorEphemeral)
    let lines = items.map(FrameDump.line)
    #expect(lines[0] == "@0 noise handshake msg=1 len=48 e=\(e)")
    #expect(lines[1] == "@50 noise handshake msg=3 len=64")
    #expect(lines[2] == "@116 noise record=0 len=23 encrypted, no key log")      // 7 plaintext bytes + 16
    #expect(lines[3] == "@141 noise record=1 len=116 encrypted, no key log")
    for (k, (item, r)) in zip(items.dropFirst(2), s.initiatorRecords).enumerated() {
        #expect(item == NoiseItem(offset: r.offset, direction: nil, length: r.length, kind: .record(number: UInt64(k), status: .noKeyLog)))
    }
    #expect(FrameDump.json(items[0]) == #"{"offset":0,"noise":"handshake","message":1,"length":48,"ephemeral":"\#(e)"}"#)
    #expect(FrameDump.json(items[3]) == #"{"offset":141,"noise":"record","record":1,"length":116,"status":"no_key_log"}"#)
    #expect(FrameDump.render(.noise(items[1]), verbose: true, hex: true, json: false) == "@50 noise handshake msg=3 len=64\n")
}

@Test func noiseResponderStreamWithoutKeyLog() throws {
    let s = try session()
    let d = try #require(try FrameDump.decodeInput(s.responderStream).first)
    #expect(d.noiseRole == .responder && d.records.isEmpty && d.noiseError == nil)
    let items = noiseItems(d)
    #expect(items.count == 1 + s.responderRecords.count)
    let er = Array(s.responderStream[2..<34])
    #expect(FrameDump.line(items[0]) == "@0 noise handshake msg=2 len=96 e=\(hex(er))")
    #expect(FrameDump.line(items[1]) == "@98 noise record=0 len=49 encrypted, no key log")
    #expect(items.last.map(FrameDump.line) == "@\(s.responderRecords.last!.offset) noise record=\(s.responderRecords.count - 1) len=\(s.responderRecords.last!.length) encrypted, no key log")
}

// MARK: - With a key log

@Test func noiseRawStreamsWithKeyLogShowThePlaintextFrames() throws {
    let s = try session()
    let other = try session(seed: 9)
    let log = logOf(other, s)
    let up = try #require(try FrameDump.decodeInput(s.initiatorStream, keyLog: log).first)
    #expect(up.error == nil && up.noiseError == nil)
    try expectSameFrames(up.records, as: upNames, direction: nil)
    // Only the handshake shows besides the frames.
    #expect(noiseItems(up).map(FrameDump.line) == ["@0 noise handshake msg=1 len=48 e=\(hex(s.keys.initiatorEphemeral))",
                                                   "@50 noise handshake msg=3 len=64"])
    // The responder's stream alone carries no e_i: its first record finds the session.
    let down = try #require(try FrameDump.decodeInput(s.responderStream, keyLog: log).first)
    #expect(down.error == nil && down.noiseError == nil)
    try expectSameFrames(down.records, as: downNames, direction: nil)
}

/// Both raw directions together (a proxy's --record files): the session is found by the
/// initiator's e_i for both, whichever file comes first.
@Test func noiseRawStreamPairWithKeyLog() throws {
    let s = try session(), log = logOf(try session(seed: 9), s)
    for swapped in [false, true] {
        let (a, b) = swapped ? (s.responderStream, s.initiatorStream) : (s.initiatorStream, s.responderStream)
        let d = FrameDump.decodeConnection(first: a, second: b, keyLog: log)
        try #require(d.count == 2)
        #expect(d.allSatisfy { $0.error == nil && $0.noiseError == nil })
        #expect(d.map(\.noiseRole) == (swapped ? [.responder, .initiator] : [.initiator, .responder]))
        let (up, down) = swapped ? (d[1], d[0]) : (d[0], d[1])
        try expectSameFrames(up.records, as: upNames, direction: up.direction)
        try expectSameFrames(down.records, as: downNames, direction: down.direction)
    }
    let plain = FrameDump.decodeConnection(first: try stream(upNames), second: try stream(downNames), keyLog: nil)
    try expectSameFrames(plain[0].records, as: upNames, direction: "c>s")
    try expectSameFrames(plain[1].records, as: downNames, direction: "s>c")
}

@Test func noiseKeyLogWithoutThisSession() throws {
    let s = try session()
    let log = logOf(try session(seed: 9))
    for bytes in [s.initiatorStream, s.responderStream] {
        let d = try #require(try FrameDump.decodeInput(bytes, keyLog: log).first)
        #expect(d.records.isEmpty && d.noiseError == nil)
        let records = noiseItems(d).filter { if case .record = $0.kind { true } else { false } }
        #expect(!records.isEmpty && records.allSatisfy {
            if case .record(_, .notInKeyLog) = $0.kind { true } else { false }
        })
        #expect(FrameDump.line(records[0]).hasSuffix(" noise record=0 len=\(records[0].length) encrypted, not in the key log"))
    }
}

/// A key log line with this session's e_i but another session's keys: record 0 fails
/// authentication, the message says what is wrong, and nothing of that direction decodes.
@Test func noiseWrongKeyLogSaysSoAndStops() throws {
    let s = try session()
    let wrong = try session(seed: 9)
    let log = NoiseKeyLog(text: NoiseKeyLog.line(NoiseSessionKeys(initiatorEphemeral: s.keys.initiatorEphemeral,
                                                                  initiatorToResponder: wrong.keys.initiatorToResponder,
                                                                  responderToInitiator: wrong.keys.responderToInitiator)))
    let capture = try pcap(s)
    let streams = try FrameDump.decodeInput(capture, keyLog: log)
    try #require(streams.count == 2)
    for d in streams {
        #expect(d.records.isEmpty)
        let failed = noiseItems(d).filter { if case .record = $0.kind { true } else { false } }
        #expect(failed.count == 1)
        #expect(failed.first.map { if case .record(0, .failedAuthentication) = $0.kind { true } else { false } } == true)
        #expect(failed.first.map(FrameDump.line)?.hasSuffix("noise record=0 len=\(failed[0].length) failed authentication") == true)
        let message = try #require(d.noiseError)
        #expect(message.contains("record 0 (") && message.contains("failed authentication with the key log's keys of session e=\(hex(s.keys.initiatorEphemeral).prefix(16))"))
        #expect(message.contains("does not hold this session's keys") && message.hasSuffix("decoding of this direction stopped"))
    }
}

// MARK: - Captures

private let client: [UInt8] = [10, 0, 0, 1], server: [UInt8] = [10, 0, 0, 2]

/// The session as a tcpdump capture (Ethernet, IPv4): handshake, then both directions in
/// segments cut through record prefixes and bodies, interleaved, one retransmitted.
private func pcap(_ s: NoiseSession) throws -> [UInt8] {
    var w = PcapWriter(linkType: 1)
    func eth(_ ip: [UInt8]) -> [UInt8] { [UInt8](repeating: 0xaa, count: 12) + [0x08, 0x00] + ip }
    let (isnC, isnS): (UInt32, UInt32) = (1000, 0xffff_fff0)
    w.packet(eth(ipv4(client, server, tcp(40000, 7001, seq: isnC, flags: 0x02, []))))
    w.packet(eth(ipv4(server, client, tcp(7001, 40000, seq: isnS, flags: 0x12, []))))
    func segments(_ bytes: [UInt8], isn: UInt32, cuts: [Int], from: [UInt8], to: [UInt8], ports: (Int, Int)) -> [[UInt8]] {
        let points = [0] + cuts.filter { $0 < bytes.count } + [bytes.count]
        return zip(points, points.dropFirst()).map { a, b in
            eth(ipv4(from, to, tcp(ports.0, ports.1, seq: isn &+ 1 &+ UInt32(a), Array(bytes[a..<b]))))
        }
    }
    let up = segments(s.initiatorStream, isn: isnC, cuts: [50, 117, 140, 400, 901, 1500], from: client, to: server, ports: (40000, 7001))
    let down = segments(s.responderStream, isn: isnS, cuts: [98, 99, 300, 1000], from: server, to: client, ports: (7001, 40000))
    w.packet(up[0])           // message 1
    w.packet(down[0])         // message 2
    for i in 1..<max(up.count, down.count) {
        if i < up.count { w.packet(up[i]) }
        if i == 2 { w.packet(up[1]) }   // retransmission
        if i < down.count { w.packet(down[i]) }
    }
    return w.bytes
}

@Test func noisePcapWithAndWithoutKeyLog() throws {
    let s = try session()
    let capture = try pcap(s)
    let plain = try FrameDump.decodeInput(capture)
    try #require(plain.count == 2)
    #expect(plain.map(\.direction) == ["10.0.0.1:40000 > 10.0.0.2:7001", "10.0.0.2:7001 > 10.0.0.1:40000"])
    #expect(plain.map(\.noiseRole) == [.initiator, .responder])
    #expect(plain.allSatisfy { $0.records.isEmpty && $0.error == nil && $0.noiseError == nil && !$0.hasGap })
    #expect(noiseItems(plain[0]).count == 2 + s.initiatorRecords.count)
    #expect(FrameDump.line(noiseItems(plain[0])[0]) == "@0 10.0.0.1:40000 > 10.0.0.2:7001 noise handshake msg=1 len=48 e=\(hex(s.keys.initiatorEphemeral))")
    #expect(FrameDump.line(noiseItems(plain[1])[1]) == "@98 10.0.0.2:7001 > 10.0.0.1:40000 noise record=0 len=49 encrypted, no key log")

    let decrypted = try FrameDump.decodeInput(capture, keyLog: logOf(try session(seed: 3), s))
    try #require(decrypted.count == 2)
    #expect(decrypted.allSatisfy { $0.error == nil && $0.noiseError == nil })
    try expectSameFrames(decrypted[0].records, as: upNames, direction: "10.0.0.1:40000 > 10.0.0.2:7001")
    try expectSameFrames(decrypted[1].records, as: downNames, direction: "10.0.0.2:7001 > 10.0.0.1:40000")
}

/// Two sessions in one capture (two client ports): each finds its own keys, and a plaintext
/// connection next to them decodes as before.
@Test func noisePcapSeveralSessionsAndPlaintext() throws {
    let a = try session(seed: 1), b = try session(seed: 2)
    var w = PcapWriter(linkType: 101)
    let plain = try stream(["ping_request"]), plainReply = try stream(["ping_reply"])
    for (port, up, down) in [(40001, a.initiatorStream, a.responderStream), (40002, b.initiatorStream, b.responderStream),
                             (40003, plain, plainReply)] {
        w.packet(ipv4(client, server, tcp(port, 7001, seq: 5, flags: 0x02, [])))
        w.packet(ipv4(client, server, tcp(port, 7001, seq: 6, up)))
        w.packet(ipv4(server, client, tcp(7001, port, seq: 9, flags: 0x12, [])))
        w.packet(ipv4(server, client, tcp(7001, port, seq: 10, down)))
    }
    let streams = try FrameDump.decodeInput(w.bytes, keyLog: logOf(b, a))
    try #require(streams.count == 6)
    #expect(streams.allSatisfy { $0.error == nil && $0.noiseError == nil })
    #expect(streams.map(\.noiseRole) == [.initiator, .responder, .initiator, .responder, nil, nil])
    for k in [0, 2] {
        try expectSameFrames(streams[k].records, as: upNames, direction: streams[k].direction)
        try expectSameFrames(streams[k + 1].records, as: downNames, direction: streams[k + 1].direction)
    }
    try expectSameFrames(streams[4].records, as: ["ping_request"], direction: streams[4].direction)
    try expectSameFrames(streams[5].records, as: ["ping_reply"], direction: streams[5].direction)
}

// MARK: - Altered bytes

/// A byte flipped inside record k: records before it decode, record k fails authentication
/// (the message says the record was altered), nothing after it is decoded.
@Test func noiseFlippedByteInARecord() throws {
    let s = try session()
    let log = logOf(s)
    let k = 3
    let r = s.initiatorRecords[k]
    for at in [r.offset + 2, r.offset + 2 + r.length / 2, r.offset + 1 + r.length] {   // first, middle, last (tag) byte
        var bytes = s.initiatorStream
        bytes[at] ^= 0x01
        let d = try #require(try FrameDump.decodeInput(bytes, keyLog: log).first)
        let plaintextBefore = upSizes.prefix(k).reduce(0, +)   // 108 bytes: the first two frames
        let (want, _) = FrameDump.decode(Array(try stream(upNames).prefix(plaintextBefore)))
        #expect(d.records.map(FrameDump.line) == want.map(FrameDump.line))
        let last = try #require(noiseItems(d).last)
        #expect(last == NoiseItem(offset: r.offset, direction: nil, length: r.length, kind: .record(number: UInt64(k), status: .failedAuthentication)))
        let message = try #require(d.noiseError)
        #expect(message.hasPrefix("record 3 (\(r.length) bytes at byte offset \(r.offset)) failed authentication"))
        #expect(message.contains("the record was altered (records 0 to 2 of this direction opened with the same keys)"))
        #expect(d.error == nil)
    }
}

/// A byte flipped in message 1 changes e_i: the session is no longer the logged one.
@Test func noiseFlippedByteInTheHandshake() throws {
    let s = try session()
    var bytes = s.initiatorStream
    bytes[2] ^= 0x80
    let d = try #require(try FrameDump.decodeInput(bytes, keyLog: logOf(s)).first)
    #expect(d.records.isEmpty && d.noiseError == nil)
    #expect(noiseItems(d).dropFirst(2).allSatisfy { if case .record(_, .notInKeyLog) = $0.kind { true } else { false } })
}

// MARK: - Rekey

/// More than 65536 records in one direction: the sender rekeyed after record 65535, and so
/// does framedump; every frame decodes, including those after the rekey.
@Test func noiseRekeyAfter65536Records() throws {
    let ping = try Vectors.bytes("ping_request")
    let count = 65_600 / ping.count + 2
    let up = (0..<count).reduce(into: [UInt8]()) { acc, _ in acc += ping }
    let s = try NoiseSession.make(up: up, down: try stream(["ping_reply"]), upSizes: [1], downSizes: [100])
    #expect(s.initiatorRecords.count == up.count && up.count > 65_600)
    // The record after the boundary really uses the rekeyed key: it does not open with the
    // Split key advanced to its nonce.
    var stale = CipherState(cipher: .aesGCM)
    try stale.initializeKey(.init(data: s.keys.initiatorToResponder))
    stale.setNonce(65536)
    let r = s.initiatorRecords[65536]
    #expect(throws: NoiseError.self) { try stale.decryptWithAd([], Array(s.initiatorStream[(r.offset + 2)..<(r.offset + 2 + r.length)])) }

    let d = try #require(try FrameDump.decodeInput(s.initiatorStream, keyLog: logOf(s)).first)
    #expect(d.error == nil && d.noiseError == nil)
    #expect(d.records.count == count)
    #expect(d.records.allSatisfy { if case .success(.pingRequest)? = $0.body { true } else { false } })
    #expect(d.records.last?.offset == (count - 1) * ping.count)
}

// MARK: - Live (proxy): pieces, and a key log line that appears later

private final class LogBox: @unchecked Sendable {
    let lock = NSLock()
    var log = NoiseKeyLog()
    var calls = 0
}

@Test func noiseLiveInPiecesWithLateKeyLogLine() throws {
    let s = try session()
    let box = LogBox()
    let conn = ConnectionDump(first: "#1 c>s", second: "#1 s>c", keyLog: { box.lock.withLock { box.calls += 1; return box.log } })
    var items: [[DumpItem]] = [[], []]
    func take(_ o: [ConnectionDump.Output]) { for x in o { items[x.side.rawValue].append(x.item) } }
    // The handshake as the proxy sees it: message 1, message 2, message 3 and the first records.
    take(conn.feed(Array(s.initiatorStream[0..<50]), from: .first))
    take(conn.feed(Array(s.responderStream[0..<98]), from: .second))
    take(conn.feed(Array(s.initiatorStream[50..<300]), from: .first))
    #expect(items[0].count == 2 && items[1].count == 1, "the handshake shows at once")
    #expect(box.calls > 0, "the key log was consulted for the first record")
    // The node writes its line; the next bytes (of either direction) find it.
    box.lock.withLock { box.log = logOf(s) }
    var at = 98
    while at < s.responderStream.count {
        let end = min(at + 37, s.responderStream.count)
        take(conn.feed(Array(s.responderStream[at..<end]), from: .second))
        at = end
    }
    at = 300
    while at < s.initiatorStream.count {
        let end = min(at + 1000, s.initiatorStream.count)
        take(conn.feed(Array(s.initiatorStream[at..<end]), from: .first))
        at = end
    }
    take(conn.finish())
    #expect(conn.noiseError(.first) == nil && conn.noiseError(.second) == nil)
    #expect(conn.sessionKeys == s.keys)
    for (side, names, label) in [(0, upNames, "#1 c>s"), (1, downNames, "#1 s>c")] {
        try expectSameFrames(items[side].compactMap { if case .frame(let r) = $0 { r } else { nil } }, as: names, direction: label)
        #expect(!items[side].contains { if case .noise(let n) = $0, case .record = n.kind { true } else { false } })
    }
}

/// A connection that falls quiet after its first request: the records wait, and a retry
/// (the proxy's timer) finds the line that appeared meanwhile, with no new bytes.
@Test func noiseLiveRetryFindsALateLineWithoutNewBytes() throws {
    let s = try session()
    let box = LogBox()
    let conn = ConnectionDump(first: nil, second: nil, keyLog: { box.lock.withLock { box.log } })
    var out = conn.feed(s.initiatorStream, from: .first)
    #expect(out.count == 2 && conn.isWaitingForKeys)
    #expect(conn.retryKeys().isEmpty, "no line yet")
    box.lock.withLock { box.log = logOf(s) }
    out = conn.retryKeys()
    #expect(!conn.isWaitingForKeys && conn.sessionKeys == s.keys)
    try expectSameFrames(out.compactMap { if case .frame(let r) = $0.item { r } else { nil } }, as: upNames, direction: nil)
    #expect(conn.retryKeys().isEmpty)
}

@Test func noiseLiveKeyLogLineNeverComes() throws {
    let s = try session()
    let conn = ConnectionDump(first: "#2 c>s", second: "#2 s>c", keyLog: { NoiseKeyLog() })
    var out = conn.feed(s.initiatorStream, from: .first) + conn.feed(s.responderStream, from: .second)
    #expect(out.count == 3, "records wait for their key log line")
    out += conn.finish()
    #expect(out.count == 3 + s.initiatorRecords.count + s.responderRecords.count)
    #expect(out.dropFirst(3).allSatisfy { if case .noise(let n) = $0.item, case .record(_, .notInKeyLog) = n.kind { true } else { false } })
}

@Test func noiseLivePendingRecordsAreBounded() throws {
    let s = try session()
    let conn = ConnectionDump(first: nil, second: nil, keyLog: { NoiseKeyLog() }, pendingLimit: 200)
    let out = conn.feed(s.initiatorStream, from: .first)
    // Past 200 pending bytes the records show as not in the key log at once.
    #expect(out.count == 2 + s.initiatorRecords.count)
}

@Test func noiseKeyLogFileIsReReadWhenItChanges() throws {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("gossip-keylog-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: dir) }
    let path = dir.appendingPathComponent("keys.log").path
    let file = NoiseKeyLogFile(path: path)
    #expect(file.current().log.sessions.isEmpty, "a missing file is an empty key log")
    let a = try session(seed: 1), b = try session(seed: 2)
    try NoiseKeyLog.line(a.keys).write(toFile: path, atomically: false, encoding: .utf8)
    #expect(file.current().log.keys(initiatorEphemeral: a.keys.initiatorEphemeral) == a.keys)
    let h = try #require(FileHandle(forWritingAtPath: path))
    h.seekToEndOfFile()
    h.write(Data(("GOSSIP_NOISE_AESGCM 1234\n" + NoiseKeyLog.line(b.keys)).utf8))
    try h.close()
    let (log, warnings) = file.current()
    #expect(log.sessions == [a.keys, b.keys])
    #expect(warnings == ["key log line 2: GOSSIP_NOISE_AESGCM needs three values of 64 hex digits (e_i, k_i2r, k_r2i); line ignored"])
    #expect(file.current().newWarnings.isEmpty, "a warning is reported once")
}

// MARK: - Key log parsing

@Test func noiseKeyLogParsing() throws {
    let a = try session(seed: 1).keys, b = try session(seed: 2).keys
    let text = """
        # comment
        CLIENT_RANDOM 00 11
        \(NoiseKeyLog.line(a).uppercased())\
        GOSSIP_NOISE_AESGCM \(hex(a.initiatorEphemeral)) zz

          GOSSIP_NOISE_AESGCM\t\(hex(b.initiatorEphemeral)) \(hex(b.initiatorToResponder)) \(hex(b.responderToInitiator))\r
        GOSSIP_NOISE_AESGCM \(hex(b.initiatorEphemeral).prefix(10))
        """
    let log = NoiseKeyLog(text: text)
    #expect(log.sessions == [a, b])
    #expect(log.keys(initiatorEphemeral: b.initiatorEphemeral) == b)
    #expect(log.keys(initiatorEphemeral: [UInt8](repeating: 0, count: 32)) == nil)
    // Line 4 is malformed; the unterminated last line may be half written: no warning.
    #expect(log.warnings == ["key log line 4: GOSSIP_NOISE_AESGCM needs three values of 64 hex digits (e_i, k_i2r, k_r2i); line ignored"])
    #expect(!log.warnings.joined().contains(hex(a.initiatorEphemeral)), "warnings never echo key material")
    #expect(NoiseKeyLog.line(a) == "GOSSIP_NOISE_AESGCM \(hex(a.initiatorEphemeral)) \(hex(a.initiatorToResponder)) \(hex(a.responderToInitiator))\n")
    #expect(throws: KeyLogError.self) { try NoiseKeyLog(contentsOf: "/nonexistent/keys.log") }
}

// MARK: - Hostile input

@Test func noiseMalformedStreamsAreRefusedCleanly() throws {
    let s = try session()
    // Message 3 of the wrong length.
    var bad3 = s.initiatorStream
    bad3[50] = 0x00; bad3[51] = 0x41
    var d = try #require(try FrameDump.decodeInput(Array(bad3[0..<52]) + [UInt8](repeating: 7, count: 200)).first)
    // 00 30 + 48 then not 00 40: this is not taken for a Noise session at all.
    #expect(d.noiseRole == nil)
    // A record shorter than a tag.
    var short = Array(s.initiatorStream[0..<116]) + [0x00, 0x10] + [UInt8](repeating: 1, count: 16)
    d = try #require(try FrameDump.decodeInput(short, keyLog: logOf(s)).first)
    #expect(d.noiseError?.hasPrefix("record 0 at byte offset 116 claims 16 bytes, less than the 17") == true)
    // A stream cut inside a record.
    short = Array(s.initiatorStream[0..<(s.initiatorRecords[2].offset + 5)])
    d = try #require(try FrameDump.decodeInput(short).first)
    #expect(d.noiseError == "the stream ends inside record 2 at byte offset \(s.initiatorRecords[2].offset) (5 of \(2 + s.initiatorRecords[2].length) bytes): the capture was cut short or the connection broke")
    // Message 2 cut short, with the initiator known.
    var conn = ConnectionDump(first: nil, second: nil, keyLog: nil)
    _ = conn.feed(Array(s.initiatorStream[0..<116]), from: .first)
    _ = conn.feed([0x00, 0x60, 0x00, 0x05], from: .second)
    _ = conn.finish()
    #expect(conn.role(.second) == .responder)
    #expect(conn.noiseError(.second) == "the stream ends inside handshake message 2 at byte offset 0 (4 of 98 bytes): the capture was cut short or the connection broke")
    // Message 3 of the wrong length once both sides are known to speak Noise.
    conn = ConnectionDump(first: nil, second: nil, keyLog: nil)
    _ = conn.feed(Array(s.initiatorStream[0..<50]), from: .first)
    _ = conn.feed(Array(s.responderStream[0..<98]), from: .second)
    _ = conn.feed([0x00, 0x41] + [UInt8](repeating: 3, count: 65), from: .first)
    #expect(conn.role(.first) == .initiator)
    #expect(conn.noiseError(.first)?.hasPrefix("handshake message 3 at byte offset 50 is 65 bytes, expected 64: not a gossip Noise session") == true)
    conn = ConnectionDump(first: nil, second: nil, keyLog: nil)
    _ = conn.feed(Array(s.initiatorStream[0..<116]), from: .first)
    _ = conn.feed([0x00, 0x61] + [UInt8](repeating: 0, count: 100), from: .second)
    #expect(conn.role(.second) == nil, "a reply that does not start like message 2 is plaintext")
    // Random bytes after Noise-looking starts, in random pieces: never a crash.
    var rng = SystemRandomNumberGenerator()
    let log = logOf(s)
    for trial in 0..<300 {
        let start: [UInt8] = trial % 3 == 0 ? [0x00, 0x30] : (trial % 3 == 1 ? [0x00, 0x60] : [])
        var bytes = start + (0..<Int.random(in: 0...400, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
        if trial % 5 == 0, bytes.count > 60 { bytes[50] = 0; bytes[51] = 0x40 }
        var provider: (@Sendable () -> NoiseKeyLog)?
        if trial % 2 == 0 { provider = { log } }
        let c = ConnectionDump(first: "a", second: "b", keyLog: provider)
        let side: ConnectionDump.Side = trial % 4 == 0 ? .second : .first
        var at = 0
        while at < bytes.count {
            let end = min(bytes.count, at + Int.random(in: 1...90, using: &rng))
            _ = c.feed(Array(bytes[at..<end]), from: side)
            at = end
        }
        _ = c.finish()
    }
}

// MARK: - Fixtures

/// Fixtures/noise-session.* are this test's session (fixed keys, so byte for byte
/// reproducible): the capture, both raw streams (as `framedump proxy --record` writes them)
/// and the key log. `framedump --keylog Fixtures/noise-session.keylog Fixtures/noise-session.pcap`
/// shows them. Regenerate with GOSSIP_WRITE_FIXTURES=1 swift test --filter noiseFixtures.
@Test func noiseFixturesAreTheBuiltSession() throws {
    let s = try session()
    let dir = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures")
    let files: [(String, [UInt8])] = [
        ("noise-session.pcap", try pcap(s)),
        ("noise-session-c2s.bin", s.initiatorStream),
        ("noise-session-s2c.bin", s.responderStream),
        ("noise-session.keylog", Array(("# gossipd --keylog-file (a secret: it opens these sessions)\n"
                                        + NoiseKeyLog.line(try session(seed: 9).keys) + NoiseKeyLog.line(s.keys)).utf8)),
    ]
    if ProcessInfo.processInfo.environment["GOSSIP_WRITE_FIXTURES"] != nil {
        for (name, bytes) in files { try Data(bytes).write(to: dir.appendingPathComponent(name)) }
    }
    for (name, bytes) in files {
        let stored = try [UInt8](Data(contentsOf: dir.appendingPathComponent(name)))
        #expect(stored == bytes, "Fixtures/\(name) differs from the session this test builds; regenerate it (see the doc comment)")
    }
    // And they decode as the tests above say.
    let log = try NoiseKeyLog(contentsOf: dir.appendingPathComponent("noise-session.keylog").path)
    let streams = try FrameDump.decodeInput(try [UInt8](Data(contentsOf: dir.appendingPathComponent("noise-session.pcap"))), keyLog: log)
    #expect(streams.count == 2 && streams.allSatisfy { $0.error == nil && $0.noiseError == nil })
    try expectSameFrames(streams[0].records, as: upNames, direction: streams[0].direction)
}

// MARK: - Cross-check with the channel's golden vector

/// The golden session of Protocol/vectors/noise_handshake.txt, written by the channel's own
/// implementation (GossipNet, SPEC §13; copied here from its commit 8939d8a, where it is
/// also checked by tools/check_noise_channel.py): this reader, built separately from the same
/// contract, finds the session by e_i and opens record 1 to the vector's plaintext frame, and
/// the independent key schedule of NoiseSessions.swift gives the same keys from its private keys.
@Test func noiseChannelGoldenVector() throws {
    func bytes(_ hex: String) -> [UInt8] {
        let d = Array(hex.utf8)
        func v(_ c: UInt8) -> UInt8 { c <= 57 ? c - 48 : c - 87 }
        return stride(from: 0, to: d.count, by: 2).map { v(d[$0]) << 4 | v(d[$0 + 1]) }
    }
    let message1 = bytes("00305869aff450549732cbaaed5e5df9b30a6da31cb0e5742bad5ad4a1a768f1a67b70527c1c1552b6e3e659a42562fe5239")
    let message2 = bytes("0060ad438bfae31f6c093d61d4339255ea798092c9fadd07b97827f4b0ae9dee7c1cc596980cb5f917829c493a1460500af3802f43ed2a1e55f9fad1a2c190e4abc48d7b69db873ee8a287bdac3a1330b34b35b3c09d2b34eb2e9f3cd04aa444a677")
    let message3 = bytes("00402ebfb74aa924ad04e99d4648e707c3fb09d2081714418cc94b9a5a996900c02d483c32700d4c70dc9468d771e23d6b024fc86674ebc23d4ae569b5b5a3fb2457")
    let record1 = bytes("00309e42ceeb9b8f8919099eec82532dbcfbbe2da0c8c5afbe97847c942426671530d2ca97da333b7ee3409af91dfbc51029")
    let plaintext = bytes("2000000001300500060000000800000008000000b7db4d6470696e6700010203")
    let keylog = "GOSSIP_NOISE_AESGCM 5869aff450549732cbaaed5e5df9b30a6da31cb0e5742bad5ad4a1a768f1a67b 071bc6d0eb8ffcbedcd77655fcd603e52fb271b8d8d38a64e54eeaeb248de50e e73822e04fc8cf72f62604ab42fea5faf71fa43a7b8f166dec82151e0203f4ac\n"

    let log = NoiseKeyLog(text: keylog)
    let conn = ConnectionDump(first: "c>s", second: "s>c", keyLog: { log })
    var frames: [FrameRecord] = []
    var handshakes: [Int] = []
    for o in conn.feed(message1, from: .first) + conn.feed(message2, from: .second)
        + conn.feed(message3 + record1, from: .first) + conn.finish() {
        switch o.item {
        case .frame(let r): frames.append(r)
        case .noise(let n): if case .handshake(let m, _) = n.kind { handshakes.append(m) } else { Issue.record("undecrypted: \(FrameDump.line(n))") }
        }
    }
    #expect(handshakes == [1, 2, 3])
    // The record authenticated with the logged key, and its plaintext went to the frame
    // decoder: the same frames (and error, if this wire version refuses the vector's frame
    // version) as the vector's plaintext decoded directly.
    #expect(conn.noiseError(.first) == nil && conn.noiseError(.second) == nil)
    #expect(conn.sessionKeys == log.sessions.first)
    let (want, error) = FrameDump.decode(plaintext, direction: "c>s")
    #expect(frames.map(FrameDump.line) == want.map(FrameDump.line))
    #expect(conn.frameError(.first) == error)
    #expect(want.count == 1 || error?.kind == .unsupportedVersion)

    let derived = NoiseSession.derivedKeys(
        si: try privateKey(hex: "0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20"),
        ei: try privateKey(hex: "2122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f40"),
        sr: try privateKey(hex: "8182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9fa0"),
        er: try privateKey(hex: "a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebfc0"),
        psk: bytes("404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f"))
    #expect(NoiseKeyLog.line(derived) == keylog)
}
