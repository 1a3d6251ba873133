// SPEC = vectors = daemon: the node's real handlers (a BootstrapNode serving on 127.0.0.1,
// called through RPCClient) answer what Protocol/SPEC.md §4-§5 and Protocol/vectors say.
import Foundation
import GossipML
import GossipNet
@testable import GossipNode
import GossipWire
import Logging
import Testing

/// Protocol/ of this package, found from this file.
let protocolDirectory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().appendingPathComponent("Protocol")

/// The one message in vector file `name` (hex, `#` comment lines), decoded by the node's codec.
func vectorMessage(_ name: String) throws -> (InboundMessage, MessageBody) {
    let text = try String(contentsOf: protocolDirectory.appendingPathComponent("vectors/\(name).hex"), encoding: .utf8)
    var digits: [UInt8] = []
    for line in text.split(separator: "\n") where !line.hasPrefix("#") {
        digits += line.utf8.filter { $0 != 0x20 && $0 != 0x09 && $0 != 0x0d }
    }
    var bytes: [UInt8] = []
    var i = 0
    while i + 1 < digits.count {
        bytes.append(UInt8(String(decoding: digits[i...i + 1], as: UTF8.self), radix: 16)!)
        i += 2
    }
    let decoder = MessageDecoder(limits: .default)
    try decoder.append(bytes)
    let m = try #require(decoder.nextMessage(), "\(name).hex holds no complete message")
    #expect(decoder.nextMessage() == nil, "\(name).hex holds more than one message")
    return (m, try MessageBody.decode(m))
}

/// A fresh path for a test's control socket (short enough for a Unix socket address).
func testSocketPath(_ name: String = "ctl") -> String {
    "/tmp/gossip-test-\(name)-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).sock"
}

/// Sends one request over the control socket at `path` (a fresh connection each time).
func controlCall(_ path: String, _ type: MessageType, _ payload: [UInt8]) -> Result<InboundMessage, RPCError> {
    let client = RPCClient()
    defer { client.close() }
    let stand = Endpoint(host: "localhost", port: 0)
    do { client.adopt(socket: try UnixSocket.connect(path: path), as: stand, secure: false) } catch { return .failure(error) }
    return callSync(client, stand, type, ByteSlice(ByteStorage(copying: payload)), deadline: .seconds(20))
}

/// A bootstrap serving a small model on 127.0.0.1 with a client for it and a control socket;
/// `stop()` ends both.
struct RunningBootstrap {
    let node: BootstrapNode
    let endpoint: Endpoint
    let client = RPCClient()
    let controlSocket = testSocketPath("boot")

    init(architecture: String = "4,3,2", security: NodeSecurity = NodeSecurity()) throws {
        let arch = try MLPArchitecture(parsing: architecture)
        var config = BootstrapConfig(listen: Endpoint(host: "127.0.0.1", port: 0), architecture: arch,
                                     initialModel: arch.makeParameters(seed: 1))
        config.security = security
        config.security.controlSocket = controlSocket
        node = try BootstrapNode(config: config, logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }))
        endpoint = try node.start()
    }

    /// A request over TCP (a member's rights).
    func call(_ type: MessageType, _ payload: [UInt8]) -> Result<InboundMessage, RPCError> {
        callSync(client, endpoint, type, ByteSlice(ByteStorage(copying: payload)), deadline: .seconds(20))
    }

    /// A request over the control socket (full rights).
    func control(_ type: MessageType, _ payload: [UInt8]) -> Result<InboundMessage, RPCError> {
        controlCall(controlSocket, type, payload)
    }

    func stop() {
        client.close()
        node.requestStop()
        node.wait()
    }
}

/// `str` as SPEC §5 lays it out: u16 byte length, then the UTF-8 bytes.
func strBytes(_ s: String) -> [UInt8] {
    let u = Array(s.utf8)
    return [UInt8(u.count & 0xff), UInt8(u.count >> 8)] + u
}

/// Polls `condition` until true or `timeout`; records an issue naming `what` on timeout.
func waitUntil(_ what: String, timeout: Duration = .seconds(20), _ condition: () -> Bool) -> Bool {
    let end = ContinuousClock.now + timeout
    while ContinuousClock.now < end {
        if condition() { return true }
        usleep(2_000)
    }
    if condition() { return true }
    Issue.record("timed out after \(timeout) waiting for \(what)")
    return false
}

func u64Bytes(_ v: UInt64) -> [UInt8] { (0..<8).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }

@Suite(.serialized) struct SpecConformanceTests {
    /// SPEC §5.4: Status and Stop requests have an empty payload; trailing bytes are
    /// INVALID_ARGUMENT, and a Stop carrying garbage does not stop the node.
    @Test func statusAndStopWithAPayloadAreRefusedAndChangeNothing() throws {
        let b = try RunningBootstrap()
        defer { b.stop() }
        for type in [MessageType.stop, .status] {
            switch b.control(type, [0xde, 0xad, 0xbe, 0xef]) {
            case .success: Issue.record("\(type.name) with a 4-byte payload was answered OK")
            case .failure(let e):
                #expect(e.remote && e.code == .invalidArgument, "\(e)")
                #expect(e.message.contains("\(type.name) request must have an empty payload, got 4 bytes"), "\(e.message)")
            }
        }
        #expect(b.node.status().phase == "serving", "a Stop with a payload stopped the node")
        let st = try b.call(.status, []).get()
        #expect(try StatusReport.parse(try WireCodec.decodeStatusReply(st.payload).json).phase == "serving")
        // The well-formed Stop does stop it (on the control socket: Stop is a control request).
        _ = try b.control(.stop, []).get()
        #expect(waitUntil("the node to stop after an empty Stop") { b.node.status().phase == "stopping" })
    }

    /// SPEC §5: a `str` past its limit is RESOURCE_EXHAUSTED; the daemon's reply to a Register
    /// whose endpoint is 300 bytes is exactly `error_resource_exhausted_zlib.hex`'s body.
    @Test func overLongEndpointIsAnsweredAsTheVectorSays() throws {
        let (vm, body) = try vectorMessage("error_resource_exhausted_zlib")
        guard case .error(type: let type, let expected) = body else {
            Issue.record("the vector is not an error reply: \(body)")
            return
        }
        #expect(type == .register && vm.type == .register)
        #expect(expected.code == .resourceExhausted)
        let b = try RunningBootstrap()
        defer { b.stop() }
        let endpoint = String(repeating: "h", count: 295) + ":7001"
        switch b.call(.register, strBytes(endpoint) + u64Bytes(0)) {
        case .success: Issue.record("a 300-byte endpoint was accepted")
        case .failure(let e):
            #expect(e.remote)
            #expect(e.code == expected.code, "daemon answered \(e.code.name), the vector says \(expected.code.name)")
            #expect(e.message == expected.message)
        }
    }

    /// SPEC §5.4: the TriggerGossip reply is what `WireCodec.encodeTriggerGossipReply` makes,
    /// byte for byte the payload of `trigger_gossip_reply.hex`, and reads back to the same value.
    @Test func triggerGossipReplyEncoderMatchesTheVector() throws {
        let (vm, body) = try vectorMessage("trigger_gossip_reply")
        guard case .triggerGossipReply = body else {
            Issue.record("the vector is not a TriggerGossip reply: \(body)")
            return
        }
        let result = TriggerGossipResult(peer: "127.0.0.1:7002", relativeL2Change: 0.0123)
        let encoded = try WireCodec.encodeTriggerGossipReply(result)
        #expect(Array(encoded.withUnsafeBytes { Array($0) }) == Array(vm.payload.withUnsafeBytes { Array($0) }))
        #expect(try WireCodec.decodeTriggerGossipReply(vm.payload) == result)
        #expect(try result.json() == #"{"peer":"127.0.0.1:7002","relative_l2_change":0.0123}"#)
    }

    @Test func triggerGossipResultRefusesWhatIsNotAReport() throws {
        #expect(throws: WireError.self) { _ = try TriggerGossipResult(peer: "a:1", relativeL2Change: .nan).json() }
        #expect(throws: WireError.self) { _ = try TriggerGossipResult(peer: "a:1", relativeL2Change: -1).json() }
        #expect(throws: NodeError.self) { _ = try TriggerGossipResult(json: #"{"peer":"a:1"}"#) }
        #expect(throws: NodeError.self) { _ = try TriggerGossipResult(json: #"[1]"#) }
        // Strings are escaped; the text parses back.
        let odd = TriggerGossipResult(peer: "q\"b\\\n", relativeL2Change: 1e-5)
        #expect(try TriggerGossipResult(json: try odd.json()) == odd)
    }
}

/// A PeerNode serving on 127.0.0.1, onboarded from its own in-process bootstrap (a tiny model
/// for the built-in digits set), training lightly; `stop()` ends both and waits.
final class RunningPeer: @unchecked Sendable {
    let bootstrap: BootstrapNode
    let node: PeerNode
    let endpoint: Endpoint
    let client = RPCClient()
    let controlSocket = testSocketPath("peer")
    private let finished = DispatchSemaphore(value: 0)

    init(averaging: AveragingMode = .sync) throws {
        let quiet = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })
        let arch = try MLPArchitecture(parsing: "64,4,10")
        bootstrap = try BootstrapNode(config: BootstrapConfig(listen: Endpoint(host: "127.0.0.1", port: 0), architecture: arch,
                                                              initialModel: arch.makeParameters(seed: 2)), logger: quiet)
        var config = PeerConfig(listen: Endpoint(host: "127.0.0.1", port: 0))
        config.bootstrap = try bootstrap.start()
        config.localSteps = 1
        config.pace = .milliseconds(20)   // a light load: the tests need a live peer, not training
        config.evalEvery = 1_000_000
        config.exchangeTimeout = .seconds(5)
        config.security.controlSocket = controlSocket
        config.averaging = averaging
        node = try PeerNode(config: config, logger: quiet)
        endpoint = try node.start()
        let (node, finished) = (node, finished)
        Thread { _ = try? node.run(); finished.signal() }.start()
        _ = waitUntil("the peer to onboard") { node.status().phase == "training" }
    }

    func call(_ type: MessageType, _ payload: [UInt8]) -> Result<InboundMessage, RPCError> {
        callSync(client, endpoint, type, ByteSlice(ByteStorage(copying: payload)), deadline: .seconds(20))
    }

    /// A request over the control socket (full rights).
    func control(_ type: MessageType, _ payload: [UInt8]) -> Result<InboundMessage, RPCError> {
        controlCall(controlSocket, type, payload)
    }

    func stop() {
        client.close()
        node.requestStop()
        #expect(finished.wait(timeout: .now() + 30) == .success, "the peer did not stop within 30 s")
        bootstrap.requestStop()
        bootstrap.wait()
    }
}

/// SPEC §4.1's table: message type name → (bootstrap cell, peer cell).
func specRoleTable() throws -> [(type: String, bootstrap: String, peer: String)] {
    let text = try String(contentsOf: protocolDirectory.appendingPathComponent("SPEC.md"), encoding: .utf8)
    guard let start = text.range(of: "### 4.1 Which role serves what") else {
        throw NodeError("SPEC.md has no section '### 4.1 Which role serves what'")
    }
    var rows: [(String, String, String)] = []
    for line in text[start.upperBound...].split(separator: "\n").drop(while: { !$0.hasPrefix("|") }) {
        guard line.hasPrefix("|") else { break }
        let cells = line.split(separator: "|").map { $0.trimmingCharacters(in: .whitespaces) }
        guard cells.count == 3, cells[0] != "type", !cells[0].hasPrefix("---") else { continue }
        rows.append((cells[0], cells[1], cells[2]))
    }
    return rows
}

/// A valid request of each type SPEC §4 defines (GossipExchange built from `model`).
func sampleRequest(_ type: MessageType, model: ModelState?) throws -> [UInt8] {
    switch type {
    case .register: return strBytes("127.0.0.1:9") + u64Bytes(0)
    case .getModel: return u64Bytes(0)
    case .gossipExchange:
        guard let model else { return [0] }
        let p = try GossipExchangeRequest(sender: "127.0.0.1:9", weight: 1, model: model).encode()
        return p.withUnsafeBytes { Array($0) }
    case .ping: return [1, 2, 3]
    case .triggerGossip: return strBytes("")
    case .pushSum:
        guard let model else { return [0] }
        let p = try PushSumRequest(sender: "127.0.0.1:9", mass: 1, model: model).encode()
        return p.withUnsafeBytes { Array($0) }
    case .reserve:   // SPEC §5.6: sender, the model's schema hash, lease 1000 ms
        return strBytes("127.0.0.1:9") + u64Bytes(model?.table.schemaHash ?? 0) + [0xe8, 0x03, 0, 0]
    case .votes: return try VotesMessage(sender: "127.0.0.1:9", flags: 0, voters: []).encode().array
    case .waitConverged: return WaitConvergedRequest(timeoutMs: 50).encode().array   // held, then DEADLINE_EXCEEDED
    case .modelPull: return try ModelPullRequest(path: "").encode().array
    case .modelPush:
        guard let model else { return [0] }
        return try ModelPushRequest(baseVersion: 1, samples: 1, steps: 1, path: "", model: model).encode().array
    default: return []
    }
}

/// Checks one role's column of SPEC §4.1 against what `call` answers; Stop is sent last.
func checkRoleColumn(_ role: String, _ column: [(type: String, cell: String)], model: ModelState?,
                     call: (MessageType, [UInt8]) -> Result<InboundMessage, RPCError>) throws {
    let types: [MessageType] = [.register, .getModel, .gossipExchange, .status, .ping, .triggerGossip, .pushSum, .reserve, .votes, .waitConverged,
                                .modelPull, .modelPush, .stop]
    #expect(Set(column.map(\.type)) == Set(types.map(\.name)), "SPEC §4.1 must list every message type once")
    for type in types {
        guard let cell = column.first(where: { $0.type == type.name })?.cell else { continue }
        let result = call(type, try sampleRequest(type, model: model))
        let code: StatusCode? = switch result {
        case .success: nil
        case .failure(let e): e.remote ? e.code : .unknown
        }
        if cell.hasPrefix("UNIMPLEMENTED") {
            #expect(code == .unimplemented, "SPEC §4.1: a \(role) answers \(type.name) UNIMPLEMENTED; it answered \(code?.name ?? "OK")")
        } else {
            #expect(cell.hasPrefix("serves"), "SPEC §4.1 cell for \(role)/\(type.name) must start with 'serves' or 'UNIMPLEMENTED'")
            #expect(code != .unimplemented && code != .unknown, "SPEC §4.1: a \(role) serves \(type.name); it answered \(code?.name ?? "OK"): \(result)")
        }
    }
}

extension SpecConformanceTests {
    /// SPEC §4.1, bootstrap column: what a bootstrap serves and what it answers UNIMPLEMENTED.
    @Test func theBootstrapServesWhatTheRoleTableSays() throws {
        let table = try specRoleTable()
        let b = try RunningBootstrap()
        defer { b.stop() }
        // Its model: the initial one, counters 0 (SPEC §5.2).
        let m = try ModelState.decode(try b.call(.getModel, u64Bytes(0)).get().payload)
        #expect(m.round == 0 && m.step == 0 && m.samples == 0)
        // What it does not serve, its text says why and where to go instead.
        for type in [MessageType.gossipExchange, .triggerGossip, .reserve, .votes, .waitConverged] {
            if case .failure(let e) = b.control(type, try sampleRequest(type, model: m)) {
                #expect(e.message.contains("bootstrap") && e.message.contains("peer"), "\(e.message)")
            }
        }
        // On the control socket, where every request is allowed: the role decides.
        try checkRoleColumn("bootstrap", table.map { ($0.type, $0.bootstrap) }, model: m, call: b.control)
    }

    /// SPEC §4.1, peer column, against a real PeerNode onboarded from an in-process bootstrap.
    @Test func thePeerServesWhatTheRoleTableSays() throws {
        let table = try specRoleTable()
        let p = try RunningPeer()
        defer { p.stop() }
        let m = try ModelState.decode(try p.call(.getModel, u64Bytes(0)).get().payload)
        try checkRoleColumn("peer", table.map { ($0.type, $0.peer) }, model: m, call: p.control)
    }

    /// SPEC §5.3: an exchange reply carries the responder's own counters (not the caller's)
    /// and its peer list holds the responder, never the caller.
    @Test func aPeersExchangeReplyIsWhatSpecSays() throws {
        let p = try RunningPeer()
        defer { p.stop() }
        let own = try ModelState.decode(try p.call(.getModel, u64Bytes(0)).get().payload)
        let mine = ModelState(architecture: own.architecture, round: 999_999, step: 999_999, samples: 999_999,
                              table: own.table, data: own.data)
        let sender = "127.0.0.1:9"
        let request = try GossipExchangeRequest(sender: sender, weight: 1, model: mine).encode().withUnsafeBytes { Array($0) }
        var reply: GossipExchangeReply?
        // ABORTED only while the peer runs an exchange of its own (e.g. towards `sender`): retry.
        _ = waitUntil("an exchange the peer does not refuse as busy") {
            switch p.call(.gossipExchange, request) {
            case .success(let msg): reply = try? GossipExchangeReply.decode(msg.payload); return true
            case .failure(let e): return e.code != .aborted
            }
        }
        let r = try #require(reply)
        let after = p.node.status()
        #expect(r.model.round != 999_999 && Int(r.model.round) <= after.round, "round \(r.model.round) is not the responder's")
        #expect(r.model.step != 999_999 && Int(r.model.step) <= after.step)
        #expect(r.model.samples != 999_999 && Int(r.model.samples) <= after.samplesSeen)
        #expect(r.peers.endpoints.contains(p.endpoint.description), "\(r.peers.endpoints) lacks the responder")
        #expect(!r.peers.endpoints.contains(sender), "\(r.peers.endpoints) lists the caller")
    }

    /// SPEC §5: a peer answers an over-long endpoint as the bootstrap does (the vector).
    @Test func aPeerAnswersAnOverLongEndpointAsTheVectorSays() throws {
        let (_, body) = try vectorMessage("error_resource_exhausted_zlib")
        guard case .error(_, let expected) = body else { return }
        let p = try RunningPeer()
        defer { p.stop() }
        let result = p.call(.register, strBytes(String(repeating: "h", count: 295) + ":7001") + u64Bytes(0))
        guard case .failure(let e) = result else { Issue.record("accepted"); return }
        #expect(e.code == expected.code && e.message == expected.message, "\(e)")
    }

    /// SPEC §5.1 for a peer: the reply lists the peer and never the registrant; the architecture
    /// is the model's; an endpoint that is not HOST:PORT is INVALID_ARGUMENT.
    @Test func aPeersRegisterReplyIsWhatSpecSays() throws {
        let p = try RunningPeer()
        defer { p.stop() }
        let reply = try RegisterReply.decode(try p.call(.register, strBytes("127.0.0.1:9") + u64Bytes(0)).get().payload)
        #expect(reply.peers.endpoints.contains(p.endpoint.description) && !reply.peers.endpoints.contains("127.0.0.1:9"), "\(reply.peers.endpoints)")
        #expect(reply.architecture == "64,4,10" && StatusReport.hex(reply.schemaHash) == p.node.status().schemaHash)
        let result = p.call(.register, strBytes("no-port") + u64Bytes(0))
        guard case .failure(let e) = result else { Issue.record("'no-port' was registered"); return }
        #expect(e.code == .invalidArgument, "\(e)")
    }

    /// SPEC §5.4: a peer's TriggerGossip reply is `WireCodec.encodeTriggerGossipReply`'s output.
    @Test func aPeersTriggerGossipReplyIsTheSpecsObject() throws {
        // The other side: a server that answers an exchange with the caller's own model.
        let other = RPCServer()
        other.register(.gossipExchange) { msg, responder in
            do {
                let req = try GossipExchangeRequest.decode(msg.payload)
                responder.reply(try GossipExchangeReply(weight: 1, peers: PeerList(entries: []), model: req.model).encode())
            } catch {
                responder.fail(for: error)
            }
        }
        let otherEndpoint = try other.start(host: "127.0.0.1", port: 0)
        defer { other.shutdown(grace: .zero) }
        let p = try RunningPeer()
        defer { p.stop() }
        var payload: ByteSlice?
        _ = waitUntil("a triggered exchange the peer does not refuse as busy") {
            switch p.control(.triggerGossip, strBytes(otherEndpoint.description)) {
            case .success(let msg): payload = msg.payload; return true
            case .failure(let e): return e.code != .aborted
            }
        }
        let got = try #require(payload, "the triggered exchange failed")
        let result = try WireCodec.decodeTriggerGossipReply(got)
        #expect(result.peer == otherEndpoint.description)
        #expect(result.relativeL2Change == 0, "the other side sent the peer's own model back")
        let want = try WireCodec.decodeStatusReply(try WireCodec.encodeTriggerGossipReply(result)).json
        let sent = try WireCodec.decodeStatusReply(got).json
        #expect(sent == want)
    }

    /// SPEC §4: a request of an unknown type is answered UNIMPLEMENTED with its own type and
    /// id, exactly as `error_unknown_type.hex` shows (code and text), and the connection stays open.
    @Test func anUnknownTypeIsAnsweredAsTheVectorSays() throws {
        let (vm, body) = try vectorMessage("error_unknown_type")
        guard case .error(let type, let expected) = body else {
            Issue.record("the vector is not an error reply: \(body)")
            return
        }
        #expect(type.rawValue == 99 && vm.type.rawValue == 99)
        let b = try RunningBootstrap()
        defer { b.stop() }
        switch b.call(MessageType(rawValue: 99), [1, 2, 3]) {
        case .success: Issue.record("type 99 was answered OK")
        case .failure(let e):
            #expect(e.remote && e.code == expected.code, "\(e)")
            #expect(e.message == expected.message)
        }
        #expect(throws: Never.self) { _ = try b.call(.ping, [7]).get() }
    }

    /// SPEC §5.2: GetModel for another schema is FAILED_PRECONDITION, exactly as
    /// `error_schema_mismatch.hex` (the bootstrap of the examples' 3,2 model, asked for 0x0123456789abcdef).
    @Test func getModelForAnotherSchemaIsAnsweredAsTheVectorSays() throws {
        let (_, body) = try vectorMessage("error_schema_mismatch")
        guard case .error(let type, let expected) = body else {
            Issue.record("the vector is not an error reply: \(body)")
            return
        }
        #expect(type == .getModel && expected.code == .failedPrecondition)
        let b = try RunningBootstrap(architecture: "3,2")
        defer { b.stop() }
        switch b.call(.getModel, u64Bytes(0x0123_4567_89ab_cdef)) {
        case .success: Issue.record("a model of another schema was served")
        case .failure(let e):
            #expect(e.remote && e.code == expected.code, "\(e)")
            #expect(e.message == expected.message)
        }
    }

    /// SPEC §5.1: a bootstrap's Register reply lists the registered peers except the registrant.
    @Test func aRegisterReplyNeverListsTheRegistrant() throws {
        let b = try RunningBootstrap()
        defer { b.stop() }
        func register(_ ep: String) throws -> RegisterReply {
            try RegisterReply.decode(try b.call(.register, strBytes(ep) + u64Bytes(0)).get().payload)
        }
        #expect(try register("127.0.0.1:9").peers.endpoints == [])
        #expect(try register("127.0.0.1:10").peers.endpoints == ["127.0.0.1:9"])
        let again = try register("127.0.0.1:9")
        #expect(again.peers.endpoints == ["127.0.0.1:10"])
        #expect(again.architecture == "4,3,2" && again.schemaHash != 0)
        // An endpoint that is not HOST:PORT is INVALID_ARGUMENT (SPEC §5.1).
        switch b.call(.register, strBytes("no-port") + u64Bytes(0)) {
        case .success: Issue.record("'no-port' was registered")
        case .failure(let e): #expect(e.remote && e.code == .invalidArgument, "\(e)")
        }
    }
}

/// SPEC §5.1/§5.3: the peer list of a reply puts the responder first, never the requester.
@Test func replyPeersListSelfFirstAndNeverTheRequester() {
    var m = Membership(selfEndpoint: "127.0.0.1:1")
    m.merge(["127.0.0.1:3", "127.0.0.1:2", "127.0.0.1:4"])
    #expect(m.replyPeers(for: "127.0.0.1:3", limit: 1024) == ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:4"])
    #expect(m.replyPeers(for: "127.0.0.1:9", limit: 2) == ["127.0.0.1:1", "127.0.0.1:2"])
    // A bootstrap has no endpoint of its own in the list.
    var boot = Membership(selfEndpoint: "")
    boot.merge(["127.0.0.1:2", "127.0.0.1:3"])
    #expect(boot.replyPeers(for: "127.0.0.1:2", limit: 1024) == ["127.0.0.1:3"])
}

/// SPEC §5.4: a status object needs only `role`; the vector's example is one gossipctl reads.
@Test func statusObjectsAreReadAsSpecSays() throws {
    let (_, body) = try vectorMessage("status_reply")
    guard case .statusReply(let reply) = body else {
        Issue.record("status_reply.hex is not a Status reply: \(body)")
        return
    }
    let s = try StatusReport.parse(reply.json)
    #expect(s.role == "peer" && s.phase == "training" && s.round == 3 && s.peers == ["127.0.0.1:7002"])
    #expect(s.accuracy == nil && s.step == 0 && s.exchanges == StatusReport.Exchanges())
    let minimal = try StatusReport.parse(#"{"role":"bootstrap","future_key":{"x":1},"loss":null}"#)
    #expect(minimal.role == "bootstrap" && minimal.loss == nil && minimal.peers.isEmpty)
    #expect(throws: (any Error).self) { _ = try StatusReport.parse(#"{"round":3}"#) }
    #expect(throws: (any Error).self) { _ = try StatusReport.parse(#"{"role":"peer","round":"three"}"#) }
}
