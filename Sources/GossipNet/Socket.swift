// Listening and connecting: a Listener that accepts on a Dispatch read source (backing off
// on EMFILE/ENFILE instead of spinning), and a non-blocking connect with a timeout (write
// readiness, then SO_ERROR), trying each resolved address in turn.
import Dispatch
import GossipWire
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A listening socket whose accepted connections are handed to `onAccept` on `queue`.
/// `@unchecked Sendable`: state is touched only on `queue`.
final class Listener: @unchecked Sendable {
    /// The listening socket; this listener is its one owner.
    private let descriptor: Descriptor
    var fd: Int32 { descriptor.raw }
    let queue: DispatchQueue
    let address: SocketAddress
    private var source: DispatchSourceRead?
    private var suspended = false
    private var closed = false
    private let onAccept: (Int32, SocketAddress) -> Void
    /// The socket file of a Unix-domain listener, removed when it closes.
    private let unixPath: String?

    /// Binds and listens on host:port (port 0: the OS picks).
    init(host: String, port: UInt16, queue: DispatchQueue, onAccept: @escaping (Int32, SocketAddress) -> Void) throws(RPCError) {
        let addrs = try Sys.resolve(host: host, port: port, passive: true)
        guard let addr = addrs.first else {
            throw RPCError(.invalidArgument, "host '\(host)' resolves to no IPv4 or IPv6 address")
        }
        var fd: Int32 = -1
        do {
            fd = try Sys.socket(family: addr.family)
            try Sys.setInt(fd, SOL_SOCKET, SO_REUSEADDR, 1, "SO_REUSEADDR")
            if addr.family == AF_INET6 { try? Sys.setInt(fd, Int32(IPPROTO_IPV6), IPV6_V6ONLY, 1, "IPV6_V6ONLY") }
            try Sys.bind(fd, addr)
            try Sys.listen(fd, backlog: 1024)
            self.address = try Sys.localAddress(fd)
        } catch {
            if fd >= 0 { Sys.close(fd) }
            throw RPCError(.unavailable, "cannot listen on \(Endpoint(host: host, port: port)): \(error); pick another port or address")
        }
        self.descriptor = Descriptor(fd)
        self.queue = queue
        self.onAccept = onAccept
        self.unixPath = nil
    }

    /// Binds and listens on a Unix-domain socket at `path` with mode 0600 (set before
    /// `listen`, so nobody connects while it is wider). A socket file nobody listens on
    /// (left by a crashed process) is replaced.
    init(unixPath path: String, queue: DispatchQueue, onAccept: @escaping (Int32, SocketAddress) -> Void) throws(RPCError) {
        let addr = try Sys.unixAddress(path)
        switch Sys.pathIsSocket(path) {
        case nil:
            break
        case false?:
            throw RPCError(.failedPrecondition, "\(path) exists and is not a socket; refusing to replace it: remove it or choose another control socket path")
        case true?:
            // Live or stale? A stale socket refuses connections.
            var probe: Int32 = -1
            do {
                probe = try Sys.unixSocket()
                try Sys.connectUnix(probe, addr)
                Sys.close(probe)
                throw RPCError(.unavailable, "another process already serves the control socket \(path); stop it or choose another path")
            } catch let e as RPCError {
                throw e
            } catch {
                if probe >= 0 { Sys.close(probe) }
                guard (error as? SyscallError)?.errno == ECONNREFUSED else {
                    throw RPCError(.unavailable, "cannot check the existing control socket \(path): \(error); remove it if no node uses it")
                }
                do { try Sys.unlink(path) } catch {
                    throw RPCError(.unavailable, "cannot remove the stale control socket \(path): \(error)")
                }
            }
        }
        var fd: Int32 = -1
        do {
            fd = try Sys.unixSocket()
            try Sys.bind(fd, addr)
            try Sys.chmod(path, 0o600)
            try Sys.listen(fd, backlog: 64)
        } catch {
            if fd >= 0 { Sys.close(fd) }
            throw RPCError(.unavailable, "cannot listen on the control socket \(path): \(error); check the folder exists and is writable")
        }
        self.address = addr
        self.descriptor = Descriptor(fd)
        self.queue = queue
        self.onAccept = onAccept
        self.unixPath = path
    }

    /// Starts accepting.
    func start() {
        queue.async { [self] in
            let s = DispatchSource.makeReadSource(fileDescriptor: fd, queue: queue)
            s.setEventHandler { [unowned self] in self.acceptAll() }
            let d = descriptor
            d.sourceAttached()
            s.setCancelHandler { d.sourceCancelled() }
            source = s
            s.resume()
        }
    }

    private func acceptAll() {
        for _ in 0..<256 {
            do {
                switch try Sys.accept(fd) {
                case .wouldBlock: return
                case .done(let (c, peer)):
                    Sys.tuneStream(c)
                    onAccept(c, peer)
                }
            } catch {
                if error.errno == EMFILE || error.errno == ENFILE || error.errno == ENOBUFS || error.errno == ENOMEM {
                    // Out of descriptors: pause accepting for a moment instead of spinning.
                    guard let s = source, !suspended else { return }
                    suspended = true
                    s.suspend()
                    queue.asyncAfter(deadline: .now() + .milliseconds(100)) { [self] in
                        if suspended && !closed { suspended = false; source?.resume() }
                    }
                    return
                }
                // ECONNABORTED, EPROTO etc.: that one connection is gone; keep accepting.
                continue
            }
        }
    }

    /// Stops accepting and closes the listening socket (after the source's cancel handler).
    func close() {
        queue.async { [self] in
            guard !closed else { return }
            closed = true
            if let s = source {
                s.cancel()
                if suspended { suspended = false; s.resume() }
            }
            descriptor.close()   // at once, or after the source's cancel handler ran
            if let unixPath, Sys.pathIsSocket(unixPath) == true { try? Sys.unlink(unixPath) }
        }
    }
}

/// Connecting to a node's local control socket (SPEC §13.8).
public enum UnixSocket {
    /// Connects to the Unix-domain socket at `path`; returns the connected, non-blocking,
    /// close-on-exec descriptor, to hand to `RPCClient.adopt(socket:as:)` (which then owns it,
    /// and talks plaintext on it: the control socket carries plaintext frames).
    /// - Throws: `RPCError(.unavailable)` saying why (no such file, nobody listening,
    ///   permission denied) and what to check.
    public static func connect(path: String) throws(RPCError) -> Int32 {
        let addr = try Sys.unixAddress(path)
        let fd: Int32
        do { fd = try Sys.unixSocket() } catch {
            throw RPCError(.unavailable, "cannot create a socket for \(path): \(error)")
        }
        do {
            try Sys.connectUnix(fd, addr)
        } catch {
            Sys.close(fd)
            let hint: String
            switch error.errno {
            case ENOENT: hint = "no such socket; is the node running with --control-socket \(path)?"
            case ECONNREFUSED: hint = "nobody listens there (a stale socket file); is the node running?"
            case EACCES, EPERM: hint = "permission denied: the control socket belongs to the user that runs the node (mode 0600)"
            default: hint = "\(error)"
            }
            throw RPCError(.unavailable, "cannot connect to the control socket \(path): \(hint)")
        }
        return fd
    }
}

/// Turns a host name into addresses for connecting. Names are resolved on a thread of their
/// own (`getaddrinfo` may block without bound), never on a connection's queue or Dispatch's
/// pool; numeric addresses are parsed in place and never reach the resolver. Injectable so
/// tests can play a slow resolver.
public struct HostResolver: Sendable {
    let resolve: @Sendable (_ host: String, _ port: UInt16) throws(RPCError) -> [SocketAddress]

    init(_ resolve: @escaping @Sendable (_ host: String, _ port: UInt16) throws(RPCError) -> [SocketAddress]) {
        self.resolve = resolve
    }

    /// The system resolver (`getaddrinfo`), IPv4 addresses first.
    public static let system = HostResolver { host, port throws(RPCError) in try Sys.resolve(host: host, port: port) }

    /// Resolves off the caller's thread and calls `completion` on `queue`.
    func resolve(_ endpoint: Endpoint, queue: DispatchQueue,
                 completion: @escaping @Sendable (Result<[SocketAddress], RPCError>) -> Void) {
        if Sys.isNumericHost(endpoint.host) {
            // A numeric address is parsed, not looked up: no resolver, no thread.
            let r = Result { () throws(RPCError) in try Sys.resolve(host: endpoint.host, port: endpoint.port) }
            queue.async { completion(r) }
            return
        }
        let resolve = self.resolve
        Sys.detachThread {
            let r = Result { () throws(RPCError) in try resolve(endpoint.host, endpoint.port) }
            queue.async { completion(r) }
        }
    }
}

/// Non-blocking connect with a timeout.
enum Connector {
    /// Connects to `endpoint`; calls `completion` on `queue` with the connected fd and peer
    /// text, or `RPCError(.unavailable)` saying why (refused, timed out, unresolvable). The
    /// `timeout` covers name resolution too: a resolver that does not answer in time fails the
    /// connect (its thread is left to finish on its own, its answer ignored).
    static func connect(to endpoint: Endpoint, timeout: Duration, queue: DispatchQueue,
                        resolver: HostResolver = .system,
                        completion: @escaping @Sendable (Result<(Int32, String), RPCError>) -> Void) {
        queue.async {
            let wait = ResolveWait(queue: queue)
            wait.start(timeout: timeout) {
                completion(.failure(RPCError(.unavailable, "cannot resolve host '\(endpoint.host)' within \(timeout); the name server does not answer")))
            }
            resolver.resolve(endpoint, queue: queue) { result in
                guard wait.finish() else { return }   // too late: the timeout already failed it
                let addrs: [SocketAddress]
                switch result {
                case .success(let a): addrs = a
                case .failure(let e): completion(.failure(e)); return
                }
                guard !addrs.isEmpty else {
                    completion(.failure(RPCError(.unavailable, "host '\(endpoint.host)' resolves to no IPv4 or IPv6 address")))
                    return
                }
                attempt(addrs, index: 0, endpoint: endpoint, timeout: timeout, queue: queue, lastError: nil, completion: completion)
            }
        }
    }

    private static func attempt(_ addrs: [SocketAddress], index: Int, endpoint: Endpoint, timeout: Duration,
                                queue: DispatchQueue, lastError: String?,
                                completion: @escaping @Sendable (Result<(Int32, String), RPCError>) -> Void) {
        guard index < addrs.count else {
            completion(.failure(RPCError(.unavailable, "cannot connect to \(endpoint): \(lastError ?? "no address"); is the peer running?")))
            return
        }
        let addr = addrs[index]
        let next = { (why: String) in
            attempt(addrs, index: index + 1, endpoint: endpoint, timeout: timeout, queue: queue, lastError: why, completion: completion)
        }
        let fd: Int32
        do { fd = try Sys.socket(family: addr.family) } catch { next("\(error)"); return }
        Sys.tuneStream(fd)
        let connected: Bool
        do { connected = try Sys.connect(fd, addr) } catch {
            Sys.close(fd)
            next(Sys.errorText(error.errno))
            return
        }
        if connected {
            completion(.success((fd, addr.description)))
            return
        }
        // Wait for write readiness, then read SO_ERROR; a timer bounds the wait.
        ConnectWait(fd: fd, queue: queue, timeout: timeout) { ok, why in
            if ok {
                completion(.success((fd, addr.description)))
            } else {
                Sys.close(fd)
                next(why)
            }
        }.start()
    }
}

/// The race between a resolution and its timeout; state on `queue`.
private final class ResolveWait: @unchecked Sendable {
    let queue: DispatchQueue
    private var done = false
    private var timer: DispatchSourceTimer?

    init(queue: DispatchQueue) { self.queue = queue }

    func start(timeout: Duration, onTimeout: @escaping () -> Void) {
        let t = DispatchSource.makeTimerSource(queue: queue)
        t.schedule(deadline: .now() + timeout.dispatch)
        t.setEventHandler { [self] in
            guard finish() else { return }
            onTimeout()
        }
        t.resume()
        timer = t
    }

    /// True for the first caller (the answer or the timeout); cancels the timer.
    func finish() -> Bool {
        dispatchPrecondition(condition: .onQueue(queue))
        if done { return false }
        done = true
        timer?.cancel()
        timer = nil
        return true
    }
}

/// One in-progress connect: write readiness or a timeout, whichever first. The outcome is
/// acted on only once no readiness event can reach the fd, so it has no other user then.
/// `@unchecked Sendable`: state is touched only on `queue`.
private final class ConnectWait: @unchecked Sendable {
    let fd: Int32
    let queue: DispatchQueue
    let timeout: Duration
    let done: (Bool, String) -> Void
    private var finished = false
    private var poll: PollHandle?
    private let t: DispatchSourceTimer

    init(fd: Int32, queue: DispatchQueue, timeout: Duration, done: @escaping (Bool, String) -> Void) {
        self.fd = fd
        self.queue = queue
        self.timeout = timeout
        self.done = done
        t = DispatchSource.makeTimerSource(queue: queue)
    }

    /// Call on `queue`.
    func start() {
        let h = PollHandle(fd: fd, queue: queue) { [self] _ in
            let e = Sys.socketError(fd)
            finish(e == 0, e == 0 ? "" : Sys.errorText(e))
        }
        poll = h
        t.setEventHandler { [self] in finish(false, "timed out after \(timeout)") }
        t.schedule(deadline: .now() + timeout.dispatch)
        t.resume()
        h.setInterest(read: false, write: true)
    }

    private func finish(_ ok: Bool, _ why: String) {
        guard !finished else { return }
        finished = true
        t.cancel()
        let h = poll
        poll = nil
        h?.cancel { [self] in done(ok, why) }
    }
}

extension Duration {
    /// As a DispatchTimeInterval: whole nanoseconds (GossipWire's `Duration.nanoseconds`),
    /// negative durations as zero, saturating far in the future.
    public var dispatch: DispatchTimeInterval {
        .nanoseconds(Int(Swift.max(0, Swift.min(nanoseconds, Int64(Int.max / 2)))))
    }
}
