// PLACEHOLDER: replaced by the channel branch.
//
// The GossipNet API of issue 9's contract, section C (/work/notes/contract9.md), in its
// smallest working form, so the node branch compiles and tests its logic before the real
// channel (Noise_XXpsk3 on every TCP connection) is merged. The integrator deletes this file
// when merging the channel branch. What it does NOT do: encrypt, authenticate or prove an
// identity. `ServerConfig.security` and `RPCClient(security:verifyPeer:)` accept their values
// and ignore them (every TCP connection stays plaintext, `remoteIdentity` is always nil,
// `verifyPeer` is never called). What it does do, for real: the Unix-domain control socket
// (`RPCServer.startControl(path:)`, mode 0600, plaintext frames, `isControl` true on its
// connections) and `UnixSocket.connect(path:)`, and `KeyLog` creates its file with mode 0600.
import Dispatch
import GossipSecure
import GossipWire
#if canImport(Glibc)
@preconcurrency import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// PLACEHOLDER: replaced by the channel branch.
/// What a node's or client's TCP connections are secured with (contract C).
public struct ChannelSecurity: Sendable {
    public var networkKey: NetworkKey
    public var identity: IdentityKey
    public var handshakeTimeout: Duration = .seconds(5)
    public var keyLog: KeyLog?
    public init(networkKey: NetworkKey, identity: IdentityKey, keyLog: KeyLog? = nil) {
        self.networkKey = networkKey
        self.identity = identity
        self.keyLog = keyLog
    }
}

// PLACEHOLDER: replaced by the channel branch.
/// The session-secret log (contract C). The placeholder only creates the file (mode 0600).
public final class KeyLog: Sendable {
    public let path: String
    public init(path: String) throws(RPCError) {
        let fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            throw RPCError(.invalidArgument, "cannot open key log \(path): \(Sys.errorText(errno)); check the path")
        }
        Glibc.close(fd)
        self.path = path
    }
}

extension ServerConfig {
    // PLACEHOLDER: replaced by the channel branch (a stored property there).
    /// nil: plaintext TCP. The placeholder keeps nothing and encrypts nothing.
    public var security: ChannelSecurity? {
        get { nil }
        set { _ = newValue }
    }
}

extension RPCClient {
    // PLACEHOLDER: replaced by the channel branch.
    /// The contract's secure client; the placeholder ignores `security` and `verifyPeer`.
    public convenience init(limits: Limits = .default, connectTimeout: Duration = .seconds(5), maxQueuedBytes: Int = 64 << 20,
                            resolver: HostResolver = .system, security: ChannelSecurity?,
                            verifyPeer: (@Sendable (Endpoint, [UInt8]) -> String?)? = nil) {
        _ = (security, verifyPeer)
        self.init(limits: limits, connectTimeout: connectTimeout, maxQueuedBytes: maxQueuedBytes, resolver: resolver)
    }
}

extension RPCClient {
    // PLACEHOLDER: replaced by the channel branch (there `secure: false` skips the handshake
    // on an adopted Unix control socket; the placeholder has no handshake to skip).
    public func adopt(socket fd: Int32, as endpoint: Endpoint, secure: Bool) {
        _ = secure
        adopt(socket: fd, as: endpoint)
    }
}

/// The peer name the placeholder control listener gives its connections.
private let controlPeerPrefix = "unix-control:"

extension RPCResponder {
    // PLACEHOLDER: replaced by the channel branch.
    /// The 32-byte static key the client proved in its handshake; the placeholder has none.
    public var remoteIdentity: [UInt8]? { nil }
    // PLACEHOLDER: replaced by the channel branch.
    /// True on a connection accepted by `startControl(path:)`.
    public var isControl: Bool { peerAddress.hasPrefix(controlPeerPrefix) }
}

// PLACEHOLDER: replaced by the channel branch.
/// A `sockaddr_un` for `path`, or nil when the path does not fit.
private func unixAddress(_ path: String) -> SocketAddress? {
    var un = sockaddr_un()
    un.sun_family = sa_family_t(AF_UNIX)
    let bytes = Array(path.utf8)
    let capacity = MemoryLayout.size(ofValue: un.sun_path)
    guard !bytes.isEmpty, bytes.count < capacity else { return nil }
    withUnsafeMutableBytes(of: &un.sun_path) { raw in
        for (i, b) in bytes.enumerated() { raw[i] = b }
        raw[bytes.count] = 0
    }
    var addr = SocketAddress()
    withUnsafeBytes(of: un) { src in
        withUnsafeMutableBytes(of: &addr.storage) { dst in dst.copyMemory(from: src) }
    }
    addr.length = socklen_t(MemoryLayout<sockaddr_un>.size)
    return addr
}

// PLACEHOLDER: replaced by the channel branch.
/// A Unix-domain listener that hands its connections to an RPCServer; it closes itself and
/// removes its socket file once the server drains.
private final class ControlListenerPlaceholder: @unchecked Sendable {
    let fd: Int32
    let path: String
    weak var server: RPCServer?
    let queue = DispatchQueue(label: "gossip.rpc.control.placeholder")
    var source: DispatchSourceRead?
    var timer: DispatchSourceTimer?
    var closed = false

    init(fd: Int32, path: String, server: RPCServer) {
        self.fd = fd
        self.path = path
        self.server = server
    }

    func start() {
        queue.async { [self] in
            let s = DispatchSource.makeReadSource(fileDescriptor: fd, queue: queue)
            s.setEventHandler { [self] in acceptAll() }
            s.setCancelHandler { [fd] in Sys.close(fd) }
            source = s
            s.resume()
            let t = DispatchSource.makeTimerSource(queue: queue)
            t.schedule(deadline: .now() + .milliseconds(100), repeating: .milliseconds(100))
            t.setEventHandler { [self] in if server?.isDraining ?? true { close() } }
            timer = t
            t.resume()
        }
    }

    private func acceptAll() {
        guard !closed, let server else { close(); return }
        while case .done(let (c, _))? = try? Sys.accept(fd) {
            server.adopt(socket: c, peer: controlPeerPrefix + path)
        }
    }

    private func close() {
        guard !closed else { return }
        closed = true
        timer?.cancel()
        source?.cancel()
        unlink(path)
    }
}

extension RPCServer {
    // PLACEHOLDER: replaced by the channel branch.
    /// Serves plaintext frames on a Unix-domain socket at `path` (mode 0600); its connections
    /// answer `isControl == true`.
    /// - Throws: `RPCError(.unavailable)` when the socket cannot be created.
    public func startControl(path: String) throws(RPCError) {
        guard let addr = unixAddress(path) else {
            throw RPCError(.invalidArgument, "control socket path \(path) is empty or longer than a Unix socket path may be (107 bytes)")
        }
        let fd: Int32
        do { fd = try Sys.socket(family: AF_UNIX) } catch {
            throw RPCError(.unavailable, "cannot create the control socket \(path): \(error)")
        }
        do throws(SyscallError) {
            try Sys.bind(fd, addr)
            guard chmod(path, 0o600) == 0 else { throw SyscallError(call: "chmod", errno: errno) }
            try Sys.listen(fd, backlog: 64)
        } catch {
            Sys.close(fd)
            throw RPCError(.unavailable, "cannot listen on the control socket \(path): \(error)")
        }
        ControlListenerPlaceholder(fd: fd, path: path, server: self).start()
    }
}

// PLACEHOLDER: replaced by the channel branch.
/// Connecting to a node's control socket (gossipctl --socket).
public enum UnixSocket {
    /// A connected, non-blocking socket to the Unix-domain socket at `path`; hand it to
    /// `RPCClient.adopt(socket:as:)`.
    /// - Throws: `RPCError(.unavailable)` naming the path and the reason.
    public static func connect(path: String) throws(RPCError) -> Int32 {
        guard let addr = unixAddress(path) else {
            throw RPCError(.invalidArgument, "control socket path \(path) is empty or longer than a Unix socket path may be (107 bytes)")
        }
        let fd: Int32
        do { fd = try Sys.socket(family: AF_UNIX) } catch {
            throw RPCError(.unavailable, "cannot create a socket for \(path): \(error)")
        }
        do throws(SyscallError) {
            if try !Sys.connect(fd, addr) {
                var p = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
                guard poll(&p, 1, 5000) == 1, Sys.socketError(fd) == 0 else {
                    throw SyscallError(call: "connect", errno: Sys.socketError(fd) == 0 ? ETIMEDOUT : Sys.socketError(fd))
                }
            }
        } catch {
            Sys.close(fd)
            throw RPCError(.unavailable, "cannot connect to the control socket \(path): \(error.errno == ENOENT ? "no such socket (is the node running, with this --control-socket?)" : Sys.errorText(error.errno))")
        }
        return fd
    }
}
