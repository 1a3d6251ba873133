// Node security (issue 9, contract D) without the channel: the listen rule, key and identity
// files, the control rule (Stop and TriggerGossip only on the control socket or from an admin
// identity), the control socket's life, and pinning in Membership.
import Foundation
import GossipML
import GossipNet
@testable import GossipNode
import GossipSecure
import GossipWire
import Logging
import Testing

/// A fresh directory under /tmp, removed by the caller.
func scratchDirectory(_ name: String) throws -> String {
    let d = "/tmp/gossip-sec-\(name)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
    try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
    return d
}

func fileMode(_ path: String) -> Int {
    ((try? FileManager.default.attributesOfItem(atPath: path))?[.posixPermissions] as? NSNumber)?.intValue ?? -1
}

@Suite struct ListenRuleTests {
    @Test func loopbackAddressesAreRecognised() {
        for h in ["127.0.0.1", "127.1.2.3", "localhost", "LOCALHOST", "::1"] { #expect(ListenPolicy.isLoopback(h), "\(h)") }
        for h in ["0.0.0.0", "::", "10.0.0.1", "128.0.0.1", "127.0.0", "127.0.0.1.5", "example.com", "127.0.0.256"] {
            #expect(!ListenPolicy.isLoopback(h), "\(h)")
        }
    }

    @Test func aNonLoopbackNodeWithoutAKeyRefusesToStart() throws {
        let ep = Endpoint(host: "0.0.0.0", port: 7000)
        do {
            _ = try ListenPolicy.check(listen: ep, secure: false, insecure: false)
            Issue.record("0.0.0.0 without a key was allowed")
        } catch {
            let text = "\(error)"
            #expect(text.contains("--network-key") && text.contains("--insecure") && text.contains("gossipctl keygen network"), "\(text)")
        }
        #expect(try ListenPolicy.check(listen: ep, secure: true, insecure: false) == nil)
        #expect(try ListenPolicy.check(listen: ep, secure: false, insecure: true) == nil)
        let notice = try ListenPolicy.check(listen: Endpoint(host: "127.0.0.1", port: 0), secure: false, insecure: false)
        #expect(notice?.contains("plaintext on loopback") == true && notice?.contains("\n") == false)
    }

    /// The nodes apply the rule themselves at start (a library user cannot skip it).
    @Test func aNodeBuiltInCodeAppliesTheRuleToo() throws {
        let arch = try MLPArchitecture(parsing: "4,3,2")
        var config = BootstrapConfig(listen: Endpoint(host: "0.0.0.0", port: 0), architecture: arch, initialModel: arch.makeParameters(seed: 1))
        let quiet = Logger(label: "t", factory: { _ in SwiftLogNoOpLogHandler() })
        let refused = try BootstrapNode(config: config, logger: quiet)
        do { _ = try refused.start(); Issue.record("a plaintext node started on 0.0.0.0") } catch {
            #expect("\(error)".contains("--network-key"))
        }
        refused.requestStop()
        refused.wait()
        config.security.insecure = true
        let allowed = try BootstrapNode(config: config, logger: quiet)
        _ = try allowed.start()
        allowed.requestStop()
        allowed.wait()
    }

    /// The same rule through the settings gossipd fills.
    @Test func settingsApplyTheRuleAndRefuseContradictions() throws {
        var s = NodeSecuritySettings()
        #expect(throws: NodeError.self) { _ = try s.resolve(listen: Endpoint(host: "10.1.2.3", port: 1), stateDir: nil) { _ in } }
        s.insecure = true
        _ = try s.resolve(listen: Endpoint(host: "10.1.2.3", port: 1), stateDir: nil) { _ in }
        s.networkKeyFile = "/nonexistent"
        do { _ = try s.resolve(listen: Endpoint(host: "127.0.0.1", port: 1), stateDir: nil) { _ in }; Issue.record("accepted") } catch {
            #expect("\(error)".contains("--insecure and --network-key"))
        }
        var t = NodeSecuritySettings()
        t.adminKeys = [String(repeating: "ab", count: 32)]
        do { _ = try t.resolve(listen: Endpoint(host: "127.0.0.1", port: 1), stateDir: nil) { _ in }; Issue.record("accepted") } catch {
            #expect("\(error)".contains("--admin-key needs --network-key"))
        }
        t.adminKeys = []
        t.keyLogFile = "/tmp/x"
        #expect(throws: NodeError.self) { _ = try t.resolve(listen: Endpoint(host: "127.0.0.1", port: 1), stateDir: nil) { _ in } }
    }
}

@Suite struct KeyAndIdentityTests {
    @Test func aNetworkKeyReadableByOthersIsRefusedWithTheChmodHint() throws {
        let dir = try scratchDirectory("key")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/net.key"
        try NetworkKey.generate().write(to: path)
        #expect(fileMode(path) == 0o600)
        var s = NodeSecuritySettings()
        s.networkKeyFile = path
        let ok = try s.resolve(listen: Endpoint(host: "0.0.0.0", port: 1), stateDir: nil) { _ in }
        #expect(ok.isSecure && ok.channel != nil)
        chmod(path, 0o644)
        do {
            _ = try s.resolve(listen: Endpoint(host: "0.0.0.0", port: 1), stateDir: nil) { _ in }
            Issue.record("a 0644 network key was accepted")
        } catch {
            #expect("\(error)".contains("chmod 600 \(path)") && "\(error)".contains("--network-key"), "\(error)")
        }
    }

    @Test func theIdentityIsCreatedInTheStateDirAndKeptAcrossStarts() throws {
        let dir = try scratchDirectory("id")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let state = dir + "/state"
        var notices: [String] = []
        let first = try NodeSecuritySettings().resolve(listen: Endpoint(host: "127.0.0.1", port: 0), stateDir: state) { notices.append($0) }
        #expect(first.identityOrigin == .stateDir(state + "/identity.key", created: true))
        #expect(fileMode(state + "/identity.key") == 0o600)
        #expect(first.controlSocket == state + "/control.sock")
        #expect(!first.isSecure && first.advertisedIdentity == nil)
        let second = try NodeSecuritySettings().resolve(listen: Endpoint(host: "127.0.0.1", port: 0), stateDir: state) { notices.append($0) }
        #expect(second.identity.publicKey == first.identity.publicKey)
        #expect(second.identityOrigin == .stateDir(state + "/identity.key", created: false))
        #expect(!notices.contains { $0.contains("ephemeral") })
        // A group-readable identity is refused, not replaced.
        chmod(state + "/identity.key", 0o640)
        #expect(throws: NodeError.self) { _ = try NodeSecurity.loadIdentity(file: nil, stateDir: state) }
    }

    /// --keylog-file hands the channel a KeyLog (its file created private) and says so once.
    @Test func aKeyLogFileReachesTheChannel() throws {
        let dir = try scratchDirectory("keylog")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var s = NodeSecuritySettings()
        s.networkKeyFile = dir + "/net.key"
        try NetworkKey.generate().write(to: dir + "/net.key")
        s.keyLogFile = dir + "/keys.log"
        var notices: [String] = []
        let r = try s.resolve(listen: Endpoint(host: "127.0.0.1", port: 0), stateDir: nil) { notices.append($0) }
        #expect(r.keyLog != nil && r.channel?.keyLog != nil)
        #expect(fileMode(dir + "/keys.log") == 0o600)
        #expect(notices.contains { $0.contains("--keylog-file") && $0.contains("decrypt") })
        s.keyLogFile = dir + "/missing-dir/keys.log"
        #expect(throws: NodeError.self) { _ = try s.resolve(listen: Endpoint(host: "127.0.0.1", port: 0), stateDir: nil) { _ in } }
    }

    @Test func withoutStateDirTheIdentityIsEphemeralWithANotice() throws {
        var notices: [String] = []
        let a = try NodeSecuritySettings().resolve(listen: Endpoint(host: "127.0.0.1", port: 0), stateDir: nil) { notices.append($0) }
        let b = try NodeSecuritySettings().resolve(listen: Endpoint(host: "127.0.0.1", port: 0), stateDir: nil) { notices.append($0) }
        #expect(a.identityOrigin == .ephemeral && a.identity.publicKey != b.identity.publicKey)
        #expect(notices.contains { $0.contains("ephemeral identity") && $0.contains("--state-dir") })
        #expect(a.controlSocket == nil)
    }

    @Test func anIdentityFileWinsAndAdminKeysAreParsed() throws {
        let dir = try scratchDirectory("idf")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let id = IdentityKey.generate(), admin = IdentityKey.generate()
        try id.write(to: dir + "/me.key")
        let keyPath = dir + "/net.key"
        try NetworkKey.generate().write(to: keyPath)
        var s = NodeSecuritySettings()
        s.identityFile = dir + "/me.key"
        s.networkKeyFile = keyPath
        s.adminKeys = [admin.publicKeyHex.uppercased()]
        s.controlSocket = dir + "/c.sock"
        let r = try s.resolve(listen: Endpoint(host: "0.0.0.0", port: 0), stateDir: dir + "/state")
        { _ in }
        #expect(r.identity == id && r.identityOrigin == .file(dir + "/me.key"))
        #expect(r.adminKeys == [admin.publicKey])
        #expect(r.controlSocket == dir + "/c.sock")
        #expect(r.advertisedIdentity == id.publicKey)
        s.adminKeys = ["xyz"]
        do { _ = try s.resolve(listen: Endpoint(host: "0.0.0.0", port: 0), stateDir: nil) { _ in }; Issue.record("accepted") } catch {
            #expect("\(error)".contains("--admin-key") && "\(error)".contains("64 hex digits"))
        }
    }
}

@Suite struct ControlRuleTests {
    let admin = IdentityKey.generate().publicKey
    let member = IdentityKey.generate().publicKey

    @Test func mutatingRequestsNeedTheControlSocketOrAnAdmin() {
        let rights = ControlRights(admins: [admin])
        for type in [MessageType.stop, .triggerGossip] {
            #expect(rights.refusal(for: type, isControl: true, remoteIdentity: nil) == nil)
            #expect(rights.refusal(for: type, isControl: false, remoteIdentity: admin) == nil)
            let plain = rights.refusal(for: type, isControl: false, remoteIdentity: nil)
            let other = rights.refusal(for: type, isControl: false, remoteIdentity: member)
            for text in [plain, other] {
                #expect(text?.contains("--socket") == true && text?.contains("--admin-key") == true, "\(text ?? "nil")")
            }
            #expect(other?.contains(Membership.hex(member)) == true)
            #expect(plain?.contains("plaintext") == true)
        }
        for type in [MessageType.status, .ping, .register, .getModel, .gossipExchange] {
            #expect(rights.refusal(for: type, isControl: false, remoteIdentity: nil) == nil, "\(type.name)")
        }
        #expect(ControlRights(admins: []).refusal(for: .stop, isControl: false, remoteIdentity: admin) != nil)
    }

    /// A real node: Stop and TriggerGossip over TCP get PERMISSION_DENIED and change nothing;
    /// over the control socket (mode 0600) Stop stops it; the socket file goes with the node.
    @Test func overTCPStopIsDeniedOnTheControlSocketItStops() throws {
        let b = try RunningBootstrap()
        #expect(fileMode(b.controlSocket) == 0o600)
        for (type, payload) in [(MessageType.stop, [UInt8]()), (.triggerGossip, strBytes(""))] {
            switch b.call(type, payload) {
            case .success: Issue.record("\(type.name) over TCP was accepted")
            case .failure(let e):
                #expect(e.remote && e.code == .permissionDenied, "\(e)")
                #expect(e.message.contains("--socket") && e.message.contains("--admin-key"), "\(e.message)")
            }
        }
        #expect(b.node.status().phase == "serving", "a refused Stop stopped the node")
        let st = try StatusReport.parse(try WireCodec.decodeStatusReply(try b.call(.status, []).get().payload).json)
        #expect(st.identity?.count == 64 && st.secure == false)
        _ = try b.control(.stop, []).get()
        #expect(waitUntil("the node to stop after Stop on the control socket") { b.node.status().phase == "stopping" })
        b.stop()
        #expect(!FileManager.default.fileExists(atPath: b.controlSocket), "the control socket outlived its node")
    }

    /// A second node on the same control socket refuses to start; a stale socket file left by
    /// a node that died is replaced; a path that is not a socket is refused.
    @Test func theControlSocketFileIsCheckedBeforeServing() throws {
        let b = try RunningBootstrap()
        defer { b.stop() }
        let arch = try MLPArchitecture(parsing: "4,3,2")
        var config = BootstrapConfig(listen: Endpoint(host: "127.0.0.1", port: 0), architecture: arch, initialModel: arch.makeParameters(seed: 1))
        config.security.controlSocket = b.controlSocket
        let second = try BootstrapNode(config: config, logger: Logger(label: "t", factory: { _ in SwiftLogNoOpLogHandler() }))
        do { _ = try second.start(); Issue.record("two nodes on one control socket") } catch {
            #expect("\(error)".contains("another node serves the control socket"), "\(error)")
        }
        second.requestStop()
        second.wait()

        let dir = try scratchDirectory("sock")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // A stale socket file: bound by a process that died (closed without unlinking).
        let other = dir + "/dead.sock"
        let dead = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            for (i, c) in other.utf8.enumerated() { raw[i] = c }
        }
        let bound = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(dead, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
        #expect(bound == 0)
        close(dead)   // the file stays, nobody listens
        try ControlSocketFile.prepare(other)
        #expect(!FileManager.default.fileExists(atPath: other), "the stale socket file was not removed")
        // Not a socket; too long.
        FileManager.default.createFile(atPath: dir + "/plain", contents: Data())
        #expect(throws: NodeError.self) { try ControlSocketFile.prepare(dir + "/plain") }
        #expect(throws: NodeError.self) { try ControlSocketFile.prepare("/tmp/" + String(repeating: "x", count: 120)) }
    }
}

@Suite struct PinningTests {
    let a = IdentityKey.generate().publicKey
    let b = IdentityKey.generate().publicKey
    let c = IdentityKey.generate().publicKey

    @Test func theFirstProofIsPinnedAndAnotherIdentityIsRefused() {
        var m = Membership(selfEndpoint: "127.0.0.1:1")
        m.merge(["127.0.0.1:2"])
        #expect(m.verify(endpoint: "127.0.0.1:2", proven: a) == .accepted(first: true))
        #expect(m.verify(endpoint: "127.0.0.1:2", proven: a) == .accepted(first: false))
        guard case .refused(let why) = m.verify(endpoint: "127.0.0.1:2", proven: b) else {
            Issue.record("another identity at a pinned endpoint was accepted")
            return
        }
        #expect(why.contains(Membership.hex(a)) && why.contains(Membership.hex(b)))
        // The pin survives a drop: a returning endpoint must prove the same identity.
        m.remove("127.0.0.1:2")
        m.markSuccess("127.0.0.1:2")
        #expect(m.verify(endpoint: "127.0.0.1:2", proven: b) != .accepted(first: false))
        #expect(m.identity(of: "127.0.0.1:2") == a)
    }

    @Test func listEntriesContradictingAPinAreDropped() {
        var m = Membership(selfEndpoint: "127.0.0.1:1")
        _ = m.verify(endpoint: "127.0.0.1:2", proven: a)
        let (added, bad) = m.merge(entries: [PeerEntry(endpoint: "127.0.0.1:2", identity: b),
                                             PeerEntry(endpoint: "127.0.0.1:3", identity: c),
                                             PeerEntry(endpoint: "127.0.0.1:4")])
        #expect(added == ["127.0.0.1:3", "127.0.0.1:4"])
        #expect(bad == [PeerEntry(endpoint: "127.0.0.1:2", identity: b)])
        #expect(m.endpoints == ["127.0.0.1:3", "127.0.0.1:4"])
        // A matching entry is fine.
        #expect(m.merge(entries: [PeerEntry(endpoint: "127.0.0.1:2", identity: a)]).added == ["127.0.0.1:2"])
    }

    /// An entry's identity is checked when the endpoint is first dialed: a mismatch is refused
    /// and the entry dropped; a match is pinned.
    @Test func aClaimedIdentityIsCheckedAtTheFirstDial() {
        var m = Membership(selfEndpoint: "127.0.0.1:1")
        m.merge(entries: [PeerEntry(endpoint: "127.0.0.1:3", identity: c), PeerEntry(endpoint: "127.0.0.1:4", identity: a)])
        guard case .refused(let why) = m.verify(endpoint: "127.0.0.1:3", proven: b) else {
            Issue.record("a first dial contradicting the listed identity was accepted")
            return
        }
        #expect(why.contains("peer list"))
        #expect(!m.endpoints.contains("127.0.0.1:3"), "the contradicted entry was kept")
        #expect(m.identity(of: "127.0.0.1:3") == nil)
        #expect(m.verify(endpoint: "127.0.0.1:4", proven: a) == .accepted(first: true))
        #expect(m.identity(of: "127.0.0.1:4") == a)
    }

    @Test func outgoingListsCarryProvenIdentitiesOnly() {
        var m = Membership(selfEndpoint: "127.0.0.1:1")
        m.merge(entries: [PeerEntry(endpoint: "127.0.0.1:2", identity: b), PeerEntry(endpoint: "127.0.0.1:3")])
        _ = m.verify(endpoint: "127.0.0.1:3", proven: c)
        let list = m.entries(["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"], selfIdentity: a)
        #expect(list == [PeerEntry(endpoint: "127.0.0.1:1", identity: a),
                         PeerEntry(endpoint: "127.0.0.1:2", identity: nil),   // claimed, not proven
                         PeerEntry(endpoint: "127.0.0.1:3", identity: c)])
        #expect(StatusReport.identities(of: m) == ["127.0.0.1:2": nil, "127.0.0.1:3": Membership.hex(c)])
    }

    @Test func pinTablesStayBounded() {
        var m = Membership(selfEndpoint: "127.0.0.1:1", capacity: 8)
        m.pinCapacity = 16
        for i in 0..<200 { _ = m.verify(endpoint: "10.0.0.1:\(1000 + i)", proven: IdentityKey.generate().publicKey) }
        #expect(m.pins.count <= 16)
    }

    /// The node's verifyPeer callback applies the pin and refuses a changed identity.
    @Test func aPeerNodeRefusesAChangedIdentityWhenItDials() throws {
        let p = try RunningPeer()
        defer { p.stop() }
        let ep = Endpoint(host: "127.0.0.1", port: 4242)
        // Through the callback the client calls (an accepted key must not read as a refusal).
        #expect(p.node.verifier.verify(ep, a) == nil)
        #expect(p.node.verifyPeer(ep, a) == nil)
        #expect(p.node.verifier.verify(ep, b)?.contains("refusing") == true)
        #expect(p.bootstrap.verifier.verify(ep, b) == nil)
        #expect(p.bootstrap.verifier.verify(ep, a)?.contains("refusing") == true)
    }
}
