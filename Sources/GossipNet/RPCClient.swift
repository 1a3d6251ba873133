// The RPC client: a pool of one connection per endpoint (a dead one is replaced on the next
// call), request ids, per-call deadlines, backpressure on the send queue, and exactly one
// terminal outcome per call (the reply, or an RPCError with a status code).
import Dispatch
import GossipSecure
import GossipWire
import Synchronization

/// Sends requests and returns their replies; thread-safe.
///
/// Completions run on the connection's internal queue: keep them short and hand heavy
/// work elsewhere (the async `call` does so by resuming a task).
public final class RPCClient: @unchecked Sendable {
    public let limits: Limits
    public let connectTimeout: Duration
    /// Bound on bytes queued for sending per connection (backpressure past it).
    public let maxQueuedBytes: Int

    /// Bytes this client's connections have read and written, all endpoints together.
    let counters = IOCounters()
    public var bytesIn: Int { counters.bytesIn }
    public var bytesOut: Int { counters.bytesOut }
    /// One pooled channel per endpoint.
    private let pool = Mutex<[Endpoint: ClientChannel]>([:])

    /// How host names are resolved (off the connection queues; `connectTimeout` and each
    /// call's deadline cover it).
    public let resolver: HostResolver

    /// The encrypted channel (SPEC §13) every new connection runs before its first request;
    /// nil: plaintext frames.
    public let security: ChannelSecurity?
    /// Checks the static key a server proved, once per new connection, before any request is
    /// sent on it; a non-nil text refuses the connection (every call on it fails
    /// UNAUTHENTICATED with that text).
    public let verifyPeer: (@Sendable (Endpoint, [UInt8]) -> String?)?

    /// - Parameters:
    ///   - security: run the Noise channel on every connection (nil: plaintext).
    ///   - verifyPeer: see `verifyPeer` (only with `security`).
    public init(limits: Limits = .default, connectTimeout: Duration = .seconds(5), maxQueuedBytes: Int = 64 << 20,
                resolver: HostResolver = .system, security: ChannelSecurity? = nil,
                verifyPeer: (@Sendable (Endpoint, [UInt8]) -> String?)? = nil) {
        self.limits = limits
        self.connectTimeout = connectTimeout
        self.maxQueuedBytes = maxQueuedBytes
        self.resolver = resolver
        self.security = security
        self.verifyPeer = verifyPeer
    }

    deinit { close() }

    /// Sends one request; `completion` runs exactly once with the reply or an error.
    ///
    /// - Parameters:
    ///   - deadline: time allowed from now until the whole reply arrived; past it the call
    ///     ends with DEADLINE_EXCEEDED (a late reply is dropped).
    /// - Errors: UNAVAILABLE (cannot connect, connection lost), DEADLINE_EXCEEDED,
    ///   RESOURCE_EXHAUSTED (payload over the limits), or the status of the server's error reply.
    public func call(_ endpoint: Endpoint, type: MessageType, payload: ByteSlice, options: RPCOptions = .init(),
                     deadline: Duration, completion: @escaping @Sendable (Result<InboundMessage, RPCError>) -> Void) {
        let message: OutboundMessage
        do {
            message = try OutboundMessage(type: type, kind: .request, requestID: 0, payload: payload,
                                          compression: options.compression, checksum: options.checksum, limits: limits)
        } catch {
            completion(.failure(RPCError(error.statusCode, "cannot send \(type) request: \(error)", notSent: true)))
            return
        }
        guard let channel = channel(for: endpoint) else {
            completion(.failure(RPCError(.unavailable, "the RPC client was closed", notSent: true)))
            return
        }
        channel.submit(message, deadline: deadline, completion: completion)
    }

    /// Sends one request and awaits its reply.
    /// - Throws: `RPCError` as for the completion form.
    public func call(_ endpoint: Endpoint, type: MessageType, payload: ByteSlice, options: RPCOptions = .init(),
                     deadline: Duration) async throws(RPCError) -> InboundMessage {
        let r: Result<InboundMessage, RPCError> = await withCheckedContinuation { cont in
            call(endpoint, type: type, payload: payload, options: options, deadline: deadline) { cont.resume(returning: $0) }
        }
        return try r.get()
    }

    /// Closes every pooled connection; in-flight calls end with UNAVAILABLE. Later calls
    /// open new connections (close does not disable the client).
    public func close() {
        let channels = pool.withLock { pool -> [ClientChannel] in
            let c = Array(pool.values)
            pool.removeAll()
            return c
        }
        for c in channels { c.shutdown("the RPC client was closed") }
    }

    /// Uses an already connected socket (e.g. one end of a socket pair) as the pooled
    /// connection for `endpoint`; the client owns and closes the descriptor.
    /// - Parameter secure: whether to run the client's `security` on it (when set). nil (the
    ///   default): yes, except on a socket connected to a named Unix-domain socket (a node's
    ///   control socket, `UnixSocket.connect(path:)`), which carries plaintext (SPEC §13.9).
    public func adopt(socket fd: Int32, as endpoint: Endpoint, secure: Bool? = nil) {
        let channel = ClientChannel(endpoint: endpoint, client: self, connectedFD: fd,
                                    secure: secure ?? !Sys.isNamedUnixPeer(fd))
        let old = pool.withLock { pool -> ClientChannel? in
            let o = pool[endpoint]
            pool[endpoint] = channel
            return o
        }
        old?.shutdown("replaced by an adopted socket")
    }

    /// Send-queue statistics of the pooled connection to `endpoint` (tests, diagnostics).
    func queueStats(_ endpoint: Endpoint) -> (queued: Int, peak: Int, bound: Int)? {
        guard let c = pool.withLock({ $0[endpoint] }) else { return nil }
        return c.queue.sync { c.queueStats }
    }

    private func channel(for endpoint: Endpoint) -> ClientChannel? {
        pool.withLock { pool in
            if let c = pool[endpoint], !c.isDead { return c }
            let c = ClientChannel(endpoint: endpoint, client: self, connectedFD: nil, secure: true)
            pool[endpoint] = c
            return c
        }
    }

    fileprivate func remove(_ channel: ClientChannel) {
        pool.withLock { pool in
            if pool[channel.endpoint] === channel { pool[channel.endpoint] = nil }
        }
    }
}

/// One pooled connection and its calls. `@unchecked Sendable`: all state on `queue`
/// (except `isDead`, an atomic).
final class ClientChannel: @unchecked Sendable {
    let endpoint: Endpoint
    let queue: DispatchQueue
    private weak var client: RPCClient?
    private let limits: Limits
    private let maxQueuedBytes: Int
    private let counters: IOCounters
    private let security: ChannelSecurity?
    private let verifyPeer: (@Sendable (Endpoint, [UInt8]) -> String?)?

    private enum State { case connecting, ready(Connection), closed(RPCError) }
    private var state: State = .connecting
    private struct Call {
        let completion: @Sendable (Result<InboundMessage, RPCError>) -> Void
        let deadline: Duration
        let expiry: DispatchTime
    }
    private var calls: [UInt32: Call] = [:]
    /// One timer for all calls' deadlines, armed for the earliest one it knows of (a
    /// per-call `asyncAfter` creates and registers a timer source per call, which costs
    /// tens of microseconds and a wake-up of Dispatch's timer thread on every call).
    /// Calls that finish early leave it armed; it then fires, finds nothing due, and
    /// re-arms for the earliest remaining deadline.
    private var deadlineTimer: DispatchSourceTimer?
    private var armedExpiry: DispatchTime?
    /// Requests not yet admitted to the send queue (connecting, or queue full), in order.
    private var waiting: [(id: UInt32, message: OutboundMessage)] = []
    private var waitingHead = 0
    private var nextID: UInt32 = 1

    /// Set once the channel failed; read by the pool from any thread.
    private let dead = Atomic<Bool>(false)
    var isDead: Bool { dead.load(ordering: .acquiring) }

    init(endpoint: Endpoint, client: RPCClient, connectedFD: Int32?, secure: Bool) {
        self.endpoint = endpoint
        self.queue = DispatchQueue(label: "gossip.rpc.client.\(endpoint)")
        self.client = client
        self.limits = client.limits
        self.maxQueuedBytes = client.maxQueuedBytes
        self.counters = client.counters
        self.security = secure ? client.security : nil
        self.verifyPeer = client.verifyPeer
        if let fd = connectedFD {
            queue.async { self.connected(fd: fd, peer: endpoint.description) }
        } else {
            Connector.connect(to: endpoint, timeout: client.connectTimeout, queue: queue, resolver: client.resolver) { result in
                switch result {
                case .success(let (fd, peer)): self.connected(fd: fd, peer: peer)
                case .failure(let e): self.fail(e)
                }
            }
        }
    }

    var queueStats: (queued: Int, peak: Int, bound: Int) {
        if case .ready(let c) = state { return (c.queuedBytes, c.peakQueuedBytes, c.maxQueuedBytes) }
        return (0, 0, maxQueuedBytes)
    }

    func submit(_ message: OutboundMessage, deadline: Duration,
                completion: @escaping @Sendable (Result<InboundMessage, RPCError>) -> Void) {
        queue.async { [self] in
            if case .closed(let e) = state {
                completion(.failure(e.markedNotSent()))
                return
            }
            var id = nextID
            while id == 0 || calls[id] != nil { id &+= 1 }
            nextID = id &+ 1
            let expiry = DispatchTime.now() + deadline.dispatch
            calls[id] = Call(completion: completion, deadline: deadline, expiry: expiry)
            if armedExpiry.map({ expiry < $0 }) ?? true { armDeadlineTimer(expiry) }
            waiting.append((id, message))
            pump()
        }
    }

    /// Moves waiting requests into the connection's send queue while they fit.
    private func pump() {
        // A secure connection takes requests once its handshake completed (`onEstablished`):
        // until then they stay here, so a call that ends meanwhile is provably not sent.
        guard case .ready(let conn) = state, security == nil || conn.isEstablished else { return }
        while waitingHead < waiting.count {
            let (id, m) = waiting[waitingHead]
            if calls[id] != nil {
                guard conn.hasRoom(for: m.wireBytes) else { return }
                waitingHead += 1
                conn.trySend(m, requestID: id)
                if case .closed = state { return }
            } else {
                waitingHead += 1
            }
        }
        waiting.removeAll(keepingCapacity: true)
        waitingHead = 0
    }

    private func connected(fd: Int32, peer: String) {
        if case .closed = state { Sys.close(fd); return }
        let conn = Connection(fd: fd, queue: queue, peer: peer, limits: limits, maxQueuedBytes: maxQueuedBytes,
                              counters: counters, security: security, role: .initiator)
        conn.onMessage = { [self] m in self.received(m) }
        conn.onWritable = { [self] in self.pump() }
        conn.onEstablished = { [self] in self.pump() }
        conn.onProtocolError = { [self] e in
            self.fail(RPCError(.unavailable, "connection to \(self.endpoint) broke: the server sent malformed bytes: \(e)"))
        }
        if let verifyPeer {
            let endpoint = endpoint
            conn.onPeerStatic = { key in verifyPeer(endpoint, key) }
        }
        conn.onClose = { [self, weak conn] reason in
            self.fail(ClientChannel.closeError(reason, endpoint: self.endpoint, secure: self.security != nil,
                                               established: conn?.isEstablished ?? false,
                                               recordsReceived: conn?.recordsReceived ?? 0))
        }
        state = .ready(conn)
        conn.start()
        pump()
    }

    /// The error every call sees when the connection closed for `reason`: on a secure
    /// connection, handshake problems are UNAUTHENTICATED and name the likely cause.
    static func closeError(_ reason: CloseReason, endpoint: Endpoint, secure: Bool, established: Bool,
                           recordsReceived: UInt64) -> RPCError {
        let keyHint = "check that both sides use the same --network-key file"
        switch reason {
        case .handshakeFailed(.plaintextPeer):
            return RPCError(.unauthenticated, "\(endpoint) answered in plaintext: it runs with --insecure; connect to it without --network-key, or restart it with the network key")
        case .handshakeFailed(let f):
            return RPCError(.unauthenticated, "secure handshake with \(endpoint) failed: \(f); the peer does not speak \(SecureChannel.noiseProtocol.name) with our prologue, or it is not a gossip node with a network key: \(keyHint)")
        case .handshakeTimedOut(let d):
            return RPCError(.unauthenticated, "\(endpoint) did not complete the secure handshake within \(d): it may run with --insecure (plaintext), be overloaded, or not be a gossip node")
        case .peerRefused(let why):
            return RPCError(.unauthenticated, why)
        case .recordRejected(let why):
            return RPCError(.unauthenticated, "connection to \(endpoint) closed: \(why)")
        case .endOfStream, .failed:
            if secure && established && recordsReceived == 0 {
                return RPCError(.unauthenticated, "\(endpoint) closed the connection right after the secure handshake, before answering: most likely it holds a different network key (\(keyHint)); or it refused this connection")
            }
            return RPCError(.unavailable, "connection to \(endpoint) closed: \(reason)")
        default:
            return RPCError(.unavailable, "connection to \(endpoint) closed: \(reason)")
        }
    }

    private func received(_ m: InboundMessage) {
        switch m.kind {
        case .request:
            return   // servers do not send requests on this connection; ignore
        case .response:
            complete(m.requestID, .success(m))
        case .error:
            let err: RPCError
            do { err = try RPCErrorPayload.decode(m.payload) } catch {
                err = RPCError(.internal, "the server sent an unreadable error reply: \(error)")
            }
            if m.type == RPCErrorPayload.connectionErrorType || m.requestID == 0 {
                // A connection-level error (SPEC §8.1; our ids start at 1, so id 0 is never an
                // answer to one of ours): the server is closing this connection, so every call
                // on it fails with that status; the next call reconnects.
                fail(RPCError(err.code, "server \(endpoint) rejected the connection: \(err.message)", remote: true))
            } else {
                complete(m.requestID, .failure(RPCError(err.code, err.message, remote: true)))
            }
        }
    }

    private func complete(_ id: UInt32, _ result: Result<InboundMessage, RPCError>) {
        guard let call = calls.removeValue(forKey: id) else { return }   // late (after deadline)
        call.completion(result)
    }

    private func armDeadlineTimer(_ at: DispatchTime) {
        if case .closed = state { return }
        let t: DispatchSourceTimer
        if let existing = deadlineTimer {
            t = existing
        } else {
            t = DispatchSource.makeTimerSource(queue: queue)
            t.setEventHandler { [weak self] in self?.deadlineTimerFired() }
            t.resume()
            deadlineTimer = t
        }
        armedExpiry = at
        t.schedule(deadline: at, leeway: .milliseconds(1))
    }

    /// Ends every call past its deadline (in id order), then re-arms for the next one.
    private func deadlineTimerFired() {
        armedExpiry = nil
        let now = DispatchTime.now()
        let due = calls.filter { $0.value.expiry <= now }.sorted { $0.key < $1.key }
        let unsent = unsentCalls
        for (id, call) in due {
            complete(id, .failure(RPCError(.deadlineExceeded, "no reply from \(endpoint) within the \(call.deadline) deadline",
                                           notSent: unsent.contains(id))))
        }
        if let next = calls.values.map(\.expiry).min() { armDeadlineTimer(next) }
        if !due.isEmpty { pump() }   // timed-out waiting requests are skipped
    }

    /// The calls whose requests were never handed to the connection (still in `waiting`: no
    /// connection yet, a secure handshake unfinished, or no room): none of their bytes left,
    /// and once their call ended none ever will (`pump` skips them).
    private var unsentCalls: Set<UInt32> { Set(waiting[waitingHead...].map(\.id)) }

    /// Ends every call with `error` and closes the connection; the pool drops this channel.
    private func fail(_ error: RPCError) {
        if case .closed = state { return }
        let conn: Connection?
        if case .ready(let c) = state { conn = c } else { conn = nil }
        let all = calls
        let unsent = unsentCalls
        state = .closed(error)
        dead.store(true, ordering: .releasing)
        client?.remove(self)
        calls.removeAll()
        waiting.removeAll()
        waitingHead = 0
        deadlineTimer?.cancel()
        deadlineTimer = nil
        armedExpiry = nil
        for (id, c) in all.sorted(by: { $0.key < $1.key }) {
            c.completion(.failure(unsent.contains(id) ? error.markedNotSent() : error))
        }
        conn?.close(.local(error.message))
    }

    func shutdown(_ why: String) {
        queue.async { self.fail(RPCError(.unavailable, why)) }
    }
}
