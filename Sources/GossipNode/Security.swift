// Node security (issue 9, contract section D): the node's network key and identity, who may
// control it, the control socket, and the secure-by-default rule for where it may listen.
// gossipd only parses flags into `NodeSecuritySettings`; everything it decides is here, as
// plain values and functions that tests call directly.
//
// Threat model (README "Security", SPEC §13 and §5.3):
// - Defended: outsiders entirely (without the network key a connection fails the handshake
//   and reaches no handler); members changing a node: Stop, TriggerGossip and any future
//   mutating request are accepted only on the local control socket (mode 0600: the node's own
//   user) or from an identity listed with --admin-key; a member taking over an endpoint that
//   another member proved (pinning, see Membership).
// - Not defended here: colluding insiders, Sybils that hold the network key, and the node's
//   own host (whoever can read the key files or the control socket is the node).
import Foundation
import GossipNet
import GossipSecure
import GossipWire
import Logging
import Synchronization

/// What gossipd's security flags say, before any file is read.
public struct NodeSecuritySettings: Sendable {
    /// `--network-key FILE`: the 32-byte network key (Noise PSK); nil: plaintext.
    public var networkKeyFile: String?
    /// `--insecure`: allow plaintext on a non-loopback address.
    public var insecure = false
    /// `--identity FILE`: the node's Curve25519 identity.
    public var identityFile: String?
    /// `--admin-key HEX` (repeatable): identities that may control the node over the network.
    public var adminKeys: [String] = []
    /// `--control-socket PATH`; nil: `STATE_DIR/control.sock` when a state dir is set, else none.
    public var controlSocket: String?
    /// `--keylog-file FILE`: append session secrets (for framedump --keylog).
    public var keyLogFile: String?

    public init() {}

    /// The control socket path these settings give: `--control-socket`, else
    /// `STATE_DIR/control.sock`, else none.
    public func controlSocketPath(stateDir: String?) -> String? {
        controlSocket ?? stateDir.map { ($0.hasSuffix("/") ? String($0.dropLast()) : $0) + "/control.sock" }
    }

    /// Reads the key files, loads or creates the identity, and applies the listen rule.
    /// - Parameters:
    ///   - listen: where the node will listen (the secure-by-default rule looks at its host).
    ///   - stateDir: the node's state directory; holds `identity.key` when no `--identity` is given.
    ///   - notice: receives one-line notices (plaintext on loopback, an ephemeral identity).
    /// - Throws: `NodeError` saying what is wrong and which flag fixes it.
    public func resolve(listen: Endpoint, stateDir: String?, notice: (String) -> Void) throws -> NodeSecurity {
        if insecure && networkKeyFile != nil {
            throw NodeError("--insecure and --network-key contradict each other: give --network-key FILE to encrypt, or --insecure for the plaintext protocol")
        }
        var key: NetworkKey?
        if let f = networkKeyFile {
            do throws(NoiseError) { key = try NetworkKey.read(from: f) } catch { throw NodeError("--network-key: \(error.message)") }
        }
        if key == nil {
            if !adminKeys.isEmpty {
                throw NodeError("--admin-key needs --network-key: a plaintext connection proves no identity, so no admin could ever be recognised")
            }
            if keyLogFile != nil {
                throw NodeError("--keylog-file needs --network-key: a plaintext node has no session secrets to log")
            }
        }
        if let text = try ListenPolicy.check(listen: listen, secure: key != nil, insecure: insecure) { notice(text) }
        var admins: [[UInt8]] = []
        for a in adminKeys {
            do throws(NoiseError) { admins.append(try IdentityKey.publicKey(fromHex: a)) } catch { throw NodeError("--admin-key: \(error.message)") }
        }
        let (identity, origin) = try NodeSecurity.loadIdentity(file: identityFile, stateDir: stateDir)
        if case .ephemeral = origin {
            notice("no --identity and no --state-dir: this node uses an ephemeral identity \(identity.publicKeyHex) for this run only; nodes that pinned this endpoint will refuse it after a restart: give --state-dir DIR (or --identity FILE) to keep it")
        }
        var keyLog: KeyLog?
        if let f = keyLogFile {
            do throws(RPCError) { keyLog = try KeyLog(path: f) } catch { throw NodeError("--keylog-file: \(error.message)") }
            notice("--keylog-file \(f): session secrets of every connection are written there; anyone who reads it can decrypt this node's traffic (for debugging only)")
        }
        var s = NodeSecurity(networkKey: key, identity: identity, adminKeys: admins)
        s.identityOrigin = origin
        s.controlSocket = controlSocketPath(stateDir: stateDir)
        s.keyLog = keyLog
        s.insecure = insecure
        return s
    }
}

/// A node's resolved security: its keys, admins and control socket.
public struct NodeSecurity: Sendable {
    /// Where the identity came from.
    public enum IdentityOrigin: Sendable, Equatable {
        case file(String)
        /// `STATE_DIR/identity.key`; `created`: written at this start.
        case stateDir(String, created: Bool)
        case ephemeral
    }

    /// The network key; nil: plaintext TCP (loopback, or `--insecure`).
    public var networkKey: NetworkKey?
    /// This node's identity (also on a plaintext node, where it is shown but proves nothing).
    public var identity: IdentityKey
    public var identityOrigin: IdentityOrigin = .ephemeral
    /// Identities that may send control requests over the network.
    public var adminKeys: [[UInt8]]
    /// The Unix-domain control socket to serve; nil: none.
    public var controlSocket: String?
    /// The session-secret log, if any.
    public var keyLog: KeyLog?
    /// `--insecure`: plaintext is allowed on a non-loopback address. The nodes check the
    /// listen rule again at `start()`, so a library user cannot skip it either.
    public var insecure = false

    /// Plaintext (allowed on loopback only), an ephemeral identity, no admins, no control
    /// socket: the default of tests.
    public init(networkKey: NetworkKey? = nil, identity: IdentityKey = .generate(), adminKeys: [[UInt8]] = [],
                controlSocket: String? = nil) {
        self.networkKey = networkKey
        self.identity = identity
        self.adminKeys = adminKeys
        self.controlSocket = controlSocket
    }

    /// True when TCP connections are encrypted and authenticated.
    public var isSecure: Bool { networkKey != nil }

    /// The channel security of this node's server and client; nil when plaintext.
    public var channel: ChannelSecurity? {
        networkKey.map { ChannelSecurity(networkKey: $0, identity: identity, keyLog: keyLog) }
    }

    /// The identity this node lists for itself in peer lists: its public key on a secure
    /// network, nil (32 zero bytes) on a plaintext one, where it proves nothing.
    public var advertisedIdentity: [UInt8]? { isSecure ? identity.publicKey : nil }

    /// The control rule of this node.
    public var rights: ControlRights { ControlRights(admins: adminKeys) }

    /// The file name of the identity in a state directory.
    public static let identityFileName = "identity.key"

    /// Loads `--identity FILE`, else `STATE_DIR/identity.key` (created with mode 0600 at the
    /// first start), else a fresh ephemeral identity.
    /// - Throws: `NodeError` when a file cannot be read (not private, malformed) or written.
    public static func loadIdentity(file: String?, stateDir: String?) throws -> (IdentityKey, IdentityOrigin) {
        if let file {
            do throws(NoiseError) { return (try IdentityKey.read(from: file), .file(file)) } catch { throw NodeError("--identity: \(error.message)") }
        }
        guard let dir = stateDir else { return (.generate(), .ephemeral) }
        let path = (dir.hasSuffix("/") ? String(dir.dropLast()) : dir) + "/" + identityFileName
        if FileManager.default.fileExists(atPath: path) {
            do throws(NoiseError) { return (try IdentityKey.read(from: path), .stateDir(path, created: false)) } catch {
                throw NodeError("the identity in --state-dir cannot be used: \(error.message)")
            }
        }
        do {
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true,
                                                    attributes: [.posixPermissions: 0o700])
        } catch {
            throw NodeError("cannot create --state-dir \(dir): \(error.localizedDescription)")
        }
        let fresh = IdentityKey.generate()
        do throws(NoiseError) {
            try fresh.write(to: path, overwrite: false)
            return (fresh, .stateDir(path, created: true))
        } catch {
            // Another process created it first: use that one.
            if let existing = try? IdentityKey.read(from: path) { return (existing, .stateDir(path, created: false)) }
            throw NodeError("cannot create the identity \(path): \(error.message)")
        }
    }
}

/// Who may send requests that change a node (contract D): Stop, TriggerGossip and every future
/// mutating type are accepted on the control socket, or over the network from an admin
/// identity. Status, Ping, Register, GetModel and GossipExchange stay open to members.
public struct ControlRights: Sendable {
    /// The request types that change a node (append new mutating types here).
    public static let mutatingTypes: Set<MessageType> = [.stop, .triggerGossip, .modelPull, .modelPush]

    /// Identities given with `--admin-key`.
    public let admins: [[UInt8]]

    public init(admins: [[UInt8]]) { self.admins = admins }

    /// nil when a `type` request from this connection may run; else the PERMISSION_DENIED
    /// text, naming what to do instead.
    public func refusal(for type: MessageType, isControl: Bool, remoteIdentity: [UInt8]?) -> String? {
        guard ControlRights.mutatingTypes.contains(type), !isControl else { return nil }
        if let id = remoteIdentity, admins.contains(where: { constantTimeEqual($0, id) }) { return nil }
        let who = remoteIdentity.map { "this connection's identity \(Membership.hex($0)) is not one of them" }
            ?? "this connection proved no identity (plaintext TCP)"
        return "\(type.name) changes this node, so it is accepted only on the node's control socket (on its host: gossipctl --socket PATH, the node's --control-socket, by default STATE_DIR/control.sock) or over the network from an identity the node lists with --admin-key (gossipctl --network-key FILE --identity FILE); \(who)"
    }
}

/// Registers `handler` for `type` behind the control rule: requests the rule refuses are
/// answered PERMISSION_DENIED (and logged) before the handler sees them.
func registerGuarded(_ server: RPCServer, _ type: MessageType, rights: ControlRights, logger: Logger,
                     _ handler: @escaping RPCHandler) {
    server.register(type) { msg, responder in
        if let why = rights.refusal(for: type, isControl: responder.isControl, remoteIdentity: responder.remoteIdentity) {
            logger.warning("control request refused", metadata: ["type": "\(type.name)", "from": "\(responder.peerAddress)"])
            return responder.fail(.permissionDenied, why)
        }
        handler(msg, responder)
    }
}

/// The secure-by-default rule for the listen address (contract D).
public enum ListenPolicy {
    /// True for 127.0.0.0/8, ::1 and "localhost": addresses only this host can reach.
    public static func isLoopback(_ host: String) -> Bool {
        let h = host.lowercased()
        if h == "localhost" || h == "::1" || h == "0:0:0:0:0:0:0:1" { return true }
        let parts = h.split(separator: ".", omittingEmptySubsequences: false)
        return parts.count == 4 && parts[0] == "127" && parts.allSatisfy { UInt8($0) != nil }
    }

    /// Applies the rule: a node without a network key may listen on a loopback address
    /// (returns a one-line notice), or anywhere with `--insecure`; otherwise it refuses.
    /// - Returns: a notice to print, or nil.
    /// - Throws: `NodeError` naming --network-key and --insecure.
    public static func check(listen: Endpoint, secure: Bool, insecure: Bool) throws -> String? {
        if secure || insecure { return nil }
        if isLoopback(listen.host) {
            return "notice: no --network-key: serving plaintext on loopback \(listen) (only this host can connect); give --network-key FILE to encrypt"
        }
        throw NodeError("refusing to listen on \(listen) without --network-key: anyone who can reach it could read and overwrite this node's model. Create a key with `gossipctl keygen network --out net.key`, copy it (mode 0600) to every node and pass --network-key net.key; or pass --insecure to run the plaintext protocol on a network you trust")
    }
}

/// The node's Unix-domain control socket file: checks before serving, removal after.
enum ControlSocketFile {
    /// The longest path a Unix-domain socket address holds (sun_path, 108 bytes with its NUL).
    static let maxPathBytes = 107

    /// Makes `path` ready for `RPCServer.startControl`: its directory exists (created 0700),
    /// and a stale socket file left by a node that died is removed.
    /// - Throws: `NodeError` when the path is too long, not a socket, or a live node serves it.
    static func prepare(_ path: String) throws {
        guard !path.isEmpty, path.utf8.count <= maxPathBytes else {
            throw NodeError("--control-socket \(path) is \(path.utf8.count) bytes; a Unix socket path may have at most \(maxPathBytes): choose a shorter path")
        }
        let dir = URL(fileURLWithPath: path).deletingLastPathComponent().path
        do {
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        } catch {
            throw NodeError("cannot create the directory of --control-socket \(path): \(error.localizedDescription)")
        }
        var st = stat()
        guard lstat(path, &st) == 0 else { return }   // nothing there
        guard st.st_mode & S_IFMT == S_IFSOCK else {
            throw NodeError("--control-socket \(path) exists and is not a socket: remove it or choose another path")
        }
        if let fd = try? UnixSocket.connect(path: path) {
            close(fd)
            throw NodeError("another node serves the control socket \(path): stop it first, or give this node another --control-socket (or --state-dir)")
        }
        unlink(path)   // stale: its node is gone
    }

    /// Removes the socket file at `path` if it is still a socket.
    static func remove(_ path: String) {
        var st = stat()
        if lstat(path, &st) == 0, st.st_mode & S_IFMT == S_IFSOCK { unlink(path) }
    }
}

/// The `verifyPeer` callback of a node's RPC client, created before the node exists (its
/// client is a `let`) and pointed at the node once it is built. Until then, and after the
/// node is gone, it accepts nothing.
final class PeerVerifier: Sendable {
    private let target = Mutex<(@Sendable (Endpoint, [UInt8]) -> String?)?>(nil)

    func set(_ f: @escaping @Sendable (Endpoint, [UInt8]) -> String?) { target.withLock { $0 = f } }

    func verify(_ ep: Endpoint, _ key: [UInt8]) -> String? {
        guard let f = target.withLock({ $0 }) else { return "this node is not ready to accept connections yet" }
        return f(ep, key)
    }

    /// The RPC client of a node with `security`: secure and pinning when it has a network key.
    func makeClient(_ security: NodeSecurity) -> RPCClient {
        guard let channel = security.channel else { return RPCClient() }
        return RPCClient(security: channel, verifyPeer: { [self] ep, key in verify(ep, key) })
    }
}

/// Applies a pin verdict: logs a first pin (info) or a refusal (error); returns the refusal text.
func logPinVerdict(_ verdict: Membership.PinVerdict, _ ep: Endpoint, _ key: [UInt8], logger: Logger) -> String? {
    switch verdict {
    case .accepted(let first):
        if first { logger.info("identity pinned", metadata: ["peer": "\(ep)", "identity": "\(Membership.hex(key))"]) }
        return nil
    case .refused(let why):
        logger.error("connection refused: identity mismatch", metadata: ["peer": "\(ep)", "why": "\(why)"])
        return why
    }
}
