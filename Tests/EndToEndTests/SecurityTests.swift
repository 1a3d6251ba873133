// Issue 9 end to end, with the real gossipd and gossipctl: who may stop a node (control socket,
// admin identity; a member over TCP gets PERMISSION_DENIED), secure by default (a non-loopback
// node without a key refuses to start), key files (created 0600, open ones refused), and the
// identity kept in the state directory across restarts.
import Foundation
import GossipNet
@testable import GossipNode
import GossipSecure
import GossipWire
import Testing

/// True when this build's channel encrypts (the channel branch is in): a plaintext Status to a
/// node that has a network key is then refused. False with the placeholder channel, where
/// no connection proves an identity.
func channelEncrypts(_ n: NodeProcess) -> Bool {
    let plain = RPCClient()
    defer { plain.close() }
    if case .success = callSync(plain, n.endpoint, .status, ByteSlice(ByteStorage(count: 0)), deadline: .seconds(10)) { return false }
    return true
}

func posixMode(_ path: String) -> Int {
    ((try? FileManager.default.attributesOfItem(atPath: path))?[.posixPermissions] as? NSNumber)?.intValue ?? -1
}

@Suite(.serialized) struct SecurityEndToEndTests {
    /// `gossipctl stop` (and `gossip`) over TCP from a member (the network key, no admin
    /// identity) is refused PERMISSION_DENIED and the node keeps running; over the control
    /// socket it stops, exits 0 and removes the socket. Status shows the identity.
    @Test func aMemberCannotStopANodeOverTCPItsControlSocketCan() throws {
        let c = try Cluster("sec-stop", secure: true)
        defer { c.shutdown() }
        let boot = try c.bootstrap()
        let peer = try c.peer(["--bootstrap", boot.endpoint.description], shard: "0/1")
        for command in [["stop"], ["gossip"]] {
            let (code, out, err) = try c.ctl(command + ["--endpoint", peer.endpoint.description] + c.keyArgs + ["-o", "json"])
            #expect(code == ControlExitCode.remoteError.rawValue, "\(command): exit \(code): \(err)")
            #expect(err.contains("PERMISSION_DENIED") && err.contains("--socket") && err.contains("--admin-key"), "\(err)")
            let obj = try JSONSerialization.jsonObject(with: Data(out.utf8)) as? [String: Any]
            #expect((obj?["error"] as? [String: Any])?["status_code"] as? Int == 7, "\(out)")
        }
        #expect(peer.process.isRunning, "a refused Stop stopped the node")
        let s = try c.status(peer)
        #expect(s.phase != "stopping" && s.secure == true)
        let id = try #require(s.identity)
        #expect(id.count == 64)
        let (sc, sout, serr) = try c.ctl(["status", "--endpoint", peer.endpoint.description] + c.keyArgs)
        #expect(sc == 0, "\(serr)")
        #expect(sout.contains("identity    \(id)  encrypted"), "\(sout)")
        let (pc, pout, perr) = try c.ctl(["peers", "--endpoint", boot.endpoint.description, "-o", "json"] + c.keyArgs)
        #expect(pc == 0, "\(perr)")
        let peers = try JSONSerialization.jsonObject(with: Data(pout.utf8)) as? [String: Any]
        #expect(peers?["peer_identities"] is [String: Any], "\(pout)")

        let (code, out, err) = try c.ctl(["stop"] + peer.socketArgs)
        #expect(code == 0, "\(err)")
        #expect(out.contains("stopping control socket"), "\(out)")
        try c.wait("the peer exits after Stop on its control socket", nodes: [peer]) { !peer.process.isRunning }
        #expect(peer.process.terminationStatus == 0)
        #expect(!FileManager.default.fileExists(atPath: try #require(peer.controlSocket)), "the control socket outlived the node")
        // gossipctl refuses contradictory targets as a usage error.
        let (both, _, bothErr) = try c.ctl(["status", "--endpoint", boot.endpoint.description] + boot.socketArgs)
        #expect(both == ControlExitCode.usage.rawValue, "\(bothErr)")
    }

    /// An identity listed with --admin-key may stop a node over TCP; another member may not.
    /// Meaningful only with the real channel (identities are proven in the handshake).
    @Test func anAdminIdentityStopsANodeOverTCP() throws {
        let c = try Cluster("sec-admin", secure: true)
        defer { c.shutdown() }
        let adminFile = c.dir + "/admin.key", otherFile = c.dir + "/other.key"
        let (kc, kout, kerr) = try c.ctl(["keygen", "identity", "--out", adminFile])
        #expect(kc == 0, "\(kerr)")
        let admin = kout.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(admin.count == 64)
        _ = try c.ctl(["keygen", "identity", "--out", otherFile])
        let boot = try c.start(["bootstrap", "--listen", "127.0.0.1:0", "--arch", "64,32,10", "--admin-key", admin])
        guard channelEncrypts(boot) else {
            try Test.cancel("needs the channel branch: the placeholder channel proves no identity, so no admin can be recognised")
        }
        let (oc, _, oerr) = try c.ctl(["stop", "--endpoint", boot.endpoint.description, "--identity", otherFile] + c.keyArgs)
        #expect(oc == ControlExitCode.remoteError.rawValue && oerr.contains("PERMISSION_DENIED"), "\(oerr)")
        #expect(boot.process.isRunning)
        let (ac, _, aerr) = try c.ctl(["stop", "--endpoint", boot.endpoint.description, "--identity", adminFile] + c.keyArgs)
        #expect(ac == 0, "\(aerr)")
        try c.wait("the bootstrap exits after an admin's Stop", nodes: [boot]) { !boot.process.isRunning }
    }

    /// Secure by default: a node listening on a non-loopback address without --network-key
    /// refuses to start (exit 64, naming --network-key and --insecure); --insecure starts it;
    /// on loopback without a key it starts with a one-line notice.
    @Test func aNonLoopbackNodeWithoutAKeyRefusesToStart() throws {
        let c = try Cluster("sec-listen")
        defer { c.shutdown() }
        let (code, _, err) = try Cluster.run(Cluster.binary("gossipd"), ["bootstrap", "--listen", "0.0.0.0:0", "--arch", "64,32,10"], timeout: 120)
        #expect(code == 64, "exit \(code): \(err)")
        #expect(err.contains("--network-key") && err.contains("--insecure") && err.contains("refusing to listen on 0.0.0.0"), "\(err)")
        let open = try c.start(["bootstrap", "--listen", "0.0.0.0:0", "--arch", "64,32,10", "--insecure"])
        #expect(open.process.isRunning)
        let local = try c.bootstrap()
        #expect((try? String(contentsOfFile: local.log, encoding: .utf8))?.contains("plaintext on loopback") == true)
    }

    /// Key files: keygen writes them 0600 and will not overwrite without --force; a key file
    /// that group or others may read is refused by gossipd (exit 64) and gossipctl (exit 66)
    /// with the chmod hint.
    @Test func keyFilesArePrivateAndOpenOnesAreRefused() throws {
        let c = try Cluster("sec-keys")
        defer { c.shutdown() }
        let key = c.dir + "/net.key", id = c.dir + "/id.key"
        let (k1, _, e1) = try c.ctl(["keygen", "network", "--out", key])
        #expect(k1 == 0, "\(e1)")
        #expect(posixMode(key) == 0o600)
        let first = try String(contentsOfFile: key, encoding: .utf8)
        let (k2, _, e2) = try c.ctl(["keygen", "network", "--out", key])
        #expect(k2 == ControlExitCode.cannotWrite.rawValue && e2.contains("--force"), "exit \(k2): \(e2)")
        #expect(try String(contentsOfFile: key, encoding: .utf8) == first)
        let (k3, _, e3) = try c.ctl(["keygen", "network", "--out", key, "--force"])
        #expect(k3 == 0, "\(e3)")
        #expect(try String(contentsOfFile: key, encoding: .utf8) != first)

        let (i1, iout, ie1) = try c.ctl(["keygen", "identity", "--out", id])
        #expect(i1 == 0 && posixMode(id) == 0o600, "\(ie1)")
        let (s1, sout, _) = try c.ctl(["identity", "show", "--in", id])
        #expect(s1 == 0 && sout == iout && iout.count == 65, "\(sout) vs \(iout)")

        chmod(key, 0o644)
        chmod(id, 0o640)
        let (g, _, gerr) = try Cluster.run(Cluster.binary("gossipd"), ["bootstrap", "--listen", "127.0.0.1:0", "--arch", "64,32,10",
                                                                       "--network-key", key], timeout: 120)
        #expect(g == 64 && gerr.contains("chmod 600 \(key)"), "exit \(g): \(gerr)")
        let (ctl, _, cerr) = try c.ctl(["status", "--endpoint", "127.0.0.1:1", "--network-key", key])
        #expect(ctl == ControlExitCode.cannotRead.rawValue && cerr.contains("chmod 600"), "exit \(ctl): \(cerr)")
        let (sh, _, sherr) = try c.ctl(["identity", "show", "--in", id])
        #expect(sh == ControlExitCode.cannotRead.rawValue && sherr.contains("chmod 600"), "exit \(sh): \(sherr)")
        chmod(key, 0o600)
        let (gi, _, gierr) = try Cluster.run(Cluster.binary("gossipd"), ["bootstrap", "--listen", "127.0.0.1:0", "--arch", "64,32,10",
                                                                         "--network-key", key, "--identity", id], timeout: 120)
        #expect(gi == 64 && gierr.contains("--identity") && gierr.contains("chmod 600"), "exit \(gi): \(gierr)")
    }

    /// The identity is created in --state-dir at the first start and is the same after a
    /// restart; the control socket defaults to STATE_DIR/control.sock.
    @Test func theIdentityIsKeptInTheStateDirAcrossRestarts() throws {
        let c = try Cluster("sec-state", secure: true)
        defer { c.shutdown() }
        let state = c.dir + "/boot-state"
        let args = ["bootstrap", "--listen", "127.0.0.1:0", "--arch", "64,32,10", "--state-dir", state]
        let first = try c.start(args)
        #expect(first.controlSocket == state + "/control.sock")
        let id = try #require(try c.status(first).identity)
        #expect(posixMode(state + "/identity.key") == 0o600)
        let (sc, sout, _) = try c.ctl(["identity", "show", "--in", state + "/identity.key"])
        #expect(sc == 0 && sout.trimmingCharacters(in: .whitespacesAndNewlines) == id)
        let (code, _, err) = try c.ctl(["stop", "--socket", state + "/control.sock"])
        #expect(code == 0, "\(err)")
        try c.wait("the first bootstrap exits", nodes: [first]) { !first.process.isRunning }
        let second = try c.start(args)
        #expect(try c.status(second).identity == id, "the identity changed across a restart with the same --state-dir")
    }

    /// Pinning end to end: peer B pins the identity peer A proved; when another node (a new
    /// identity) answers at A's address, B refuses it and logs why, and keeps A's pin.
    /// Meaningful only with the real channel (identities are proven in the handshake).
    @Test func aChangedIdentityAtAPinnedEndpointIsRefused() throws {
        let c = try Cluster("sec-pin", secure: true)
        defer { c.shutdown() }
        let boot = try c.bootstrap()
        guard channelEncrypts(boot) else {
            try Test.cancel("needs the channel branch: the placeholder channel proves no identity, so nothing is pinned")
        }
        func peerArgs(_ listen: String, _ state: String) -> [String] {
            ["peer", "--listen", listen, "--bootstrap", boot.endpoint.description, "--dataset", "digits", "--shard", "0/2",
             "--local-steps", "10", "--exchange-timeout", "3", "--pace-ms", "50", "--state-dir", state, "--no-converge"] + Cluster.fast
        }
        let a = try c.start(peerArgs("127.0.0.1:0", c.dir + "/a"))
        let b = try c.start(peerArgs("127.0.0.1:0", c.dir + "/b"))
        let aID = try #require(try c.status(a).identity)
        try c.wait("B pins A's identity", nodes: [a, b]) {
            (try c.status(b).peerIdentities[a.endpoint.description] ?? nil) == aID
        }
        kill(a.pid, SIGKILL)
        a.process.waitUntilExit()
        // Another identity (a fresh state dir) at A's address.
        let impostor = try c.start(peerArgs(a.endpoint.description, c.dir + "/impostor"))
        #expect(try c.status(impostor).identity != aID)
        try c.wait("B refuses the new identity at A's address and logs it", nodes: [b, impostor]) {
            ((try? String(contentsOfFile: b.log, encoding: .utf8)) ?? "").contains("identity mismatch")
        }
        _ = try c.model(b)   // B still serves
        #expect(try c.status(b).peerIdentities[a.endpoint.description].map { $0 == aID } ?? true,
                "B's pin for A's address changed")
    }
}
