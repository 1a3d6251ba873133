// The RPC server: accepts connections, dispatches requests to handlers by message type,
// enforces limits (connections, in-flight requests per connection, idle and stalled-frame
// timeouts, malformed input), answers asynchronously through RPCResponder, counts bytes,
// and shuts down gracefully.
//
// Fair admission (SPEC §11, issue 11): one remote address holds at most
// `maxConnectionsPerAddress` connections; a connection must complete the handshake and one
// whole request within `silentTimeout` (the auth deadline); and when the server is full, a
// newcomer evicts the oldest connection with nothing in flight (first those that never sent a
// request, then the least recently used) instead of being refused. Threat model: a host
// holding idle sockets can take its own per-address share and no more, and a silent socket
// lives at most the auth deadline; what is NOT defended: many addresses (a botnet, or a
// spoofing-free /64 of IPv6 addresses) each within its cap can still keep a full server
// evicting, which costs honest clients a reconnect, never a refusal while anything is idle.
import Dispatch
import GossipSecure
import GossipWire
import Synchronization

/// Server limits and timeouts.
public struct ServerConfig: Sendable {
    /// Frame and message bounds the decoder enforces.
    public var limits: Limits = .default
    /// Connections open at once. A newcomer beyond it evicts the oldest connection with
    /// nothing in flight; when every connection is busy it is answered RESOURCE_EXHAUSTED
    /// and closed.
    public var maxConnections = 256
    /// Connections open at once from one remote IP address (`--max-conns-per-address`);
    /// more are answered RESOURCE_EXHAUSTED and closed. 0: no per-address limit. The default
    /// lets 32 peers on one host (all from 127.0.0.1, each holding a pooled connection or
    /// two) reach a node, while one address cannot take more than a quarter of a 256 server.
    public var maxConnectionsPerAddress = 64
    /// Requests awaiting a handler's answer per connection; more get RESOURCE_EXHAUSTED.
    public var maxInFlightPerConnection = 64
    /// A connection with no traffic and no request in flight for this long is closed. It also
    /// bounds a client's half-close (SPEC §1): the server answers what it received before the
    /// end of the stream, but closes, without the replies still owed, once it has written
    /// nothing for this long.
    public var idleTimeout: Duration = .seconds(300)
    /// A frame or message that started arriving must finish within this time, or the
    /// connection is dropped (a stalled sender cannot hold memory or a slot forever).
    public var frameTimeout: Duration = .seconds(30)
    /// Bytes queued for sending per connection before replies wait (backpressure). Replies
    /// waiting beyond that may add up to this much again; past it (a client that sends
    /// requests but does not read replies) the connection is closed.
    public var maxQueuedBytes = 64 << 20
    /// The auth deadline (`--auth-deadline-ms`): a connection that has not completed the
    /// secure handshake and delivered one whole request (or begun one, once the channel is
    /// up: a large first request is then bounded by `frameTimeout`) this long after
    /// connecting is closed, so idle sockets cannot hold the connection slots.
    public var silentTimeout: Duration = .seconds(3)
    /// The receive budget and buffer pool of this server's connections: the process's one
    /// (`ReceiveBuffers.shared`) unless a test isolates its own.
    public var receiveBuffers: ReceiveBuffers = .shared
    /// The encrypted channel (SPEC §13) every TCP connection must complete before any frame
    /// is decoded; nil: plaintext frames (`--insecure`). The control socket
    /// (`RPCServer.startControl`) is always plaintext.
    public var security: ChannelSecurity?
    /// Called (from any thread) with one line for each connection closed for a security
    /// reason: a failed or timed-out handshake, a plaintext client refused, a record that
    /// failed authentication. Nil: not reported.
    public var securityLog: (@Sendable (String) -> Void)?

    public init() {}
}

/// A request handler: answer through the responder, now or later, from any thread. It runs on
/// Dispatch's pool and must not block (see `RPCServer`).
public typealias RPCHandler = @Sendable (InboundMessage, RPCResponder) -> Void

/// Serves requests; thread-safe. Handlers run on Dispatch's global concurrent queue, never on
/// a connection's queue. Handlers must not block: a handler that waits (on a lock held for
/// long, a condition, a semaphore, a synchronous RPC) holds one of Dispatch's pool threads,
/// and enough of them starve every other handler of the process. Do slow work elsewhere (a
/// thread or a queue of your own) and answer through the responder when it is done, within
/// the client's deadline.
public final class RPCServer: @unchecked Sendable {
    public let config: ServerConfig
    /// Everything mutable, behind one `Mutex`.
    private struct State {
        var handlers: [MessageType: RPCHandler] = [:]
        var connections: [ObjectIdentifier: ServerConnection] = [:]
        var listener: Listener?
        var controlListener: Listener?
        var draining = false
        var stopped = false
        var closingAll = false
        var shutdownCompletion: (@Sendable () -> Void)?
        var accepted = 0
        var refused = 0
        var evicted = 0
        /// Open connections per remote address (not the control socket or adopted sockets).
        var perAddress: [String: Int] = [:]
        /// Connections chosen for eviction whose close has not completed yet.
        var evicting = 0
        /// Refused connections still sending their error reply.
        var rejecting = 0
        var requestCount = 0
        var inFlight = 0
        var currentLimits: Limits
    }
    private let state: Mutex<State>
    let counters = IOCounters()
    private let acceptQueue = DispatchQueue(label: "gossip.rpc.accept")

    public init(config: ServerConfig = .init()) {
        self.config = config
        self.state = Mutex(State(currentLimits: config.limits))
    }

    /// The limits connections accepted from now on decode with: `config.limits`, with
    /// `maxMessageBytes` as `fitModel(payloadBytes:)` last set it.
    public var limits: Limits { state.withLock { s in s.currentLimits } }

    /// Bounds receive memory by this node's model (issue 8, defect 1): model-carrying
    /// messages (GetModel reply, GossipExchange request and reply) may be at most
    /// `payloadBytes` plus `Limits.modelMessageMargin`, and the process-wide receive budget
    /// (`config.receiveBuffers`, by default `ReceiveBuffers.shared`: every connection of the
    /// process together, clients' too)
    /// becomes `ReceiveBuffers.budget(forModelMessageBytes:)` of that. Call it once the node
    /// knows its model, before or after `start`; connections accepted earlier keep the limits
    /// they started with.
    /// - Parameter payloadBytes: size of the node's encoded model (its GetModel reply
    ///   payload); the raw weight bytes are close enough, the margin covers the rest.
    public func fitModel(payloadBytes: Int) {
        let fitted = state.withLock { s -> Limits in
            s.currentLimits = config.limits.fittingModel(payloadBytes: payloadBytes)
            return s.currentLimits
        }
        config.receiveBuffers.setBudget(ReceiveBuffers.budget(forModelMessageBytes: fitted.maxMessageBytes))
    }

    /// Registers (or replaces) the handler for `type`.
    public func register(_ type: MessageType, handler: @escaping RPCHandler) {
        state.withLock { s in s.handlers[type] = handler }
    }

    /// Binds host:port (port 0: the OS picks) and starts accepting.
    /// - Returns: the bound endpoint (numeric host, actual port).
    /// - Throws: `RPCError(.unavailable)` when the address cannot be bound.
    @discardableResult
    public func start(host: String, port: UInt16) throws(RPCError) -> Endpoint {
        let l = try Listener(host: host, port: port, queue: acceptQueue) { [self] fd, peer in
            accept(fd: fd, peer: peer.description, address: peer.hostAndPort.host)
        }
        let fresh = state.withLock { s -> Bool in
            guard s.listener == nil, !s.draining else { return false }
            s.listener = l
            return true
        }
        guard fresh else {
            l.close()
            throw RPCError(.failedPrecondition, "the server is already started or shutting down; create a new RPCServer")
        }
        l.start()
        let (h, p) = l.address.hostAndPort
        return Endpoint(host: h, port: p)
    }

    /// Serves an already connected socket (e.g. one end of a socket pair); the server owns
    /// and closes the descriptor. It runs the secure channel when `config.security` is set,
    /// unless `control` is true (then it is served as the control socket is: plaintext,
    /// `isControl`).
    public func adopt(socket fd: Int32, peer: String = "local", control: Bool = false) {
        accept(fd: fd, peer: peer, control: control)
    }

    /// Listens on a Unix-domain socket at `path` for local control (SPEC §13.8): plaintext
    /// frames, no handshake; the file's mode 0600 is the authentication, and handlers see
    /// `RPCResponder.isControl == true`. A stale socket file (nobody listening) is replaced;
    /// the file is removed at shutdown.
    /// - Throws: `RPCError(.failedPrecondition)` when `path` exists and is not a socket, or
    ///   the control socket is already started; `.unavailable` when another process serves
    ///   it or it cannot be bound; `.invalidArgument` for a path that does not fit.
    public func startControl(path: String) throws(RPCError) {
        let l = try Listener(unixPath: path, queue: acceptQueue) { [self] fd, _ in
            accept(fd: fd, peer: "control socket \(path)", control: true)
        }
        let fresh = state.withLock { s -> Bool in
            guard s.controlListener == nil, !s.draining else { return false }
            s.controlListener = l
            return true
        }
        guard fresh else {
            l.close()
            throw RPCError(.failedPrecondition, "the control socket is already started or the server is shutting down")
        }
        l.start()
    }

    /// Counters, read at one instant.
    public var stats: ServerStats {
        state.withLock { s in
            ServerStats(connections: s.connections.count, acceptedConnections: s.accepted, requests: s.requestCount,
                        inFlight: s.inFlight, bytesIn: counters.bytesIn, bytesOut: counters.bytesOut,
                        refusedConnections: s.refused, evictedConnections: s.evicted)
        }
    }

    /// Stops accepting, lets in-flight requests finish within `grace` (new requests get
    /// UNAVAILABLE), then closes every connection and calls `completion` once all closed.
    public func shutdown(grace: Duration, completion: (@Sendable () -> Void)? = nil) {
        let (l, already) = state.withLock { s -> (Listener?, Bool) in
            if s.draining { return (nil, true) }
            s.draining = true
            s.shutdownCompletion = completion
            let l = s.listener
            s.listener = nil
            s.controlListener?.close()
            s.controlListener = nil
            return (l, false)
        }
        if already {
            // A second shutdown: just wait for the first one's end.
            if let completion { acceptQueue.async { self.whenStopped(completion) } }
            return
        }
        l?.close()
        acceptQueue.asyncAfter(deadline: .now() + grace.dispatch) { self.closeAll() }
        maybeFinishDraining()
    }

    private func whenStopped(_ completion: @escaping @Sendable () -> Void) {
        if state.withLock({ $0.stopped }) { completion() } else {
            acceptQueue.asyncAfter(deadline: .now() + .milliseconds(10)) { self.whenStopped(completion) }
        }
    }

    // MARK: internals

    /// What `admit` decided for a newcomer.
    private enum Admission {
        case admitted(evicting: ServerConnection?)
        case refused(String)
        /// Refused, and so many refusals are still answering that this one is closed
        /// without a reply (a flood cannot hold descriptors through its error replies).
        case dropped
    }

    private func accept(fd: Int32, peer: String, address: String? = nil, control: Bool = false) {
        let queue = DispatchQueue(label: "gossip.rpc.server.conn")
        let conn = Connection(fd: fd, queue: queue, peer: peer, limits: limits, buffers: config.receiveBuffers,
                              maxQueuedBytes: config.maxQueuedBytes,
                              counters: counters, idleTimeout: config.idleTimeout, frameTimeout: config.frameTimeout,
                              security: control ? nil : config.security, role: .responder)
        conn.silentTimeout = config.silentTimeout
        let sc = ServerConnection(conn: conn, server: self, isControl: control, address: control ? nil : address)
        let decision = state.withLock { s in admit(sc, &s) }
        switch decision {
        case .admitted(let victim):
            queue.async { sc.start() }
            if let victim { victim.conn.queue.async { victim.evict() } }
        case .refused(let why):
            queue.async { sc.reject(why) }
        case .dropped:
            queue.async { sc.conn.close(.local("refused without a reply: too many refusals in progress")) }
        }
    }

    /// The admission decision for `sc`, under the lock: the per-address cap, then the total
    /// with eviction of the oldest idle connection.
    private func admit(_ sc: ServerConnection, _ s: inout State) -> Admission {
        func refuse(_ why: String) -> Admission {
            s.refused += 1
            if s.rejecting >= 64 { return .dropped }
            s.rejecting += 1
            return .refused(why)
        }
        if s.draining { return refuse("the server is shutting down; retry another peer") }
        let cap = config.maxConnectionsPerAddress
        if let a = sc.address, cap > 0, s.perAddress[a, default: 0] >= cap {
            return refuse("\(cap) connections from \(a) are already open (the per-address limit, --max-conns-per-address); close idle ones or reuse them")
        }
        var victim: ServerConnection?
        if s.connections.count - s.evicting >= config.maxConnections {
            // Full: the newcomer takes the place of the oldest connection with nothing in
            // flight; never-used ones first (oldest opened), then the least recently used.
            var best: ServerConnection?
            for c in s.connections.values where !c.isControl && c.isEvictable {
                guard let b = best else { best = c; continue }
                if c.evictionRank < b.evictionRank { best = c }
            }
            guard let best, s.evicting < max(1, config.maxConnections / 4) else {
                return refuse("the server has reached its limit of \(config.maxConnections) connections and none is idle; retry later")
            }
            best.markEvicting()
            s.evicting += 1
            s.evicted += 1
            victim = best
        }
        s.connections[ObjectIdentifier(sc)] = sc
        if let a = sc.address { s.perAddress[a, default: 0] += 1 }
        s.accepted += 1
        return .admitted(evicting: victim)
    }

    func rejectFinished() { state.withLock { s in s.rejecting -= 1 } }
    func evictionCancelled() { state.withLock { s in s.evicting -= 1 } }

    func handler(for type: MessageType) -> RPCHandler? { state.withLock { s in s.handlers[type] } }
    var isDraining: Bool { state.withLock { s in s.draining } }

    func noteRequest(started: Bool) {
        state.withLock { s in
            s.requestCount += 1
            if started { s.inFlight += 1 }
        }
    }

    func requestFinished() {
        state.withLock { s in s.inFlight -= 1 }
        maybeFinishDraining()
    }

    func connectionClosed(_ sc: ServerConnection) {
        state.withLock { s in
            guard s.connections.removeValue(forKey: ObjectIdentifier(sc)) != nil else { return }
            if let a = sc.address {
                let n = s.perAddress[a, default: 1] - 1
                s.perAddress[a] = n > 0 ? n : nil
            }
            if sc.wasMarkedEvicting { s.evicting -= 1 }
        }
        maybeCompleteShutdown()
    }

    private func maybeFinishDraining() {
        let ready = state.withLock { s in s.draining && s.inFlight == 0 }
        if ready { acceptQueue.async { self.closeAll() } }
    }

    private func closeAll() {
        let all = state.withLock { s -> [ServerConnection]? in
            if s.closingAll { return nil }
            s.closingAll = true
            return Array(s.connections.values)
        }
        guard let all else { return }
        for sc in all { sc.conn.queue.async { sc.conn.closeAfterFlush(linger: .milliseconds(500)) } }
        maybeCompleteShutdown()
    }

    private func maybeCompleteShutdown() {
        let c = state.withLock { s -> (@Sendable () -> Void)?? in
            guard s.closingAll, !s.stopped, s.connections.isEmpty else { return nil }
            s.stopped = true
            let c = s.shutdownCompletion
            s.shutdownCompletion = nil
            return .some(c)
        }
        if case .some(let completion) = c { completion?() }
    }
}

/// One accepted connection's request bookkeeping; state on `conn.queue`.
final class ServerConnection: @unchecked Sendable {
    let conn: Connection
    let server: RPCServer
    /// Accepted on the Unix control socket.
    let isControl: Bool
    /// The remote IP address the per-address cap counts (nil: control socket, adopted socket).
    let address: String?
    private var inFlight = 0 { didSet { noteBusy() } }
    private var waitingReplies: [OutboundMessage] = [] { didSet { noteBusy() } }
    private var waitingBytes = 0
    /// For eviction, read by the server under its lock (written on `conn.queue`): whether a
    /// request is in flight or replies wait, whether a request ever arrived, and when the
    /// last one did (nanoseconds since `opened`).
    private let busy = Atomic<Bool>(false)
    private let everRequested = Atomic<Bool>(false)
    private let lastRequestNanos = Atomic<Int64>(0)
    private let evicting = Atomic<Bool>(false)
    private let opened = ContinuousClock.now
    private static let origin = ContinuousClock.now

    init(conn: Connection, server: RPCServer, isControl: Bool = false, address: String? = nil) {
        self.conn = conn
        self.server = server
        self.isControl = isControl
        self.address = address
    }

    private func noteBusy() { busy.store(inFlight > 0 || !waitingReplies.isEmpty, ordering: .releasing) }

    /// Nothing in flight and not already being evicted.
    var isEvictable: Bool { !busy.load(ordering: .acquiring) && !evicting.load(ordering: .acquiring) }

    /// Smaller is evicted first: (0, opened) for connections that never sent a request, then
    /// (1, last request) for the others.
    var evictionRank: (Int, Int64) {
        let sinceOrigin = Int64((opened - ServerConnection.origin).nanoseconds)
        if !everRequested.load(ordering: .acquiring) { return (0, sinceOrigin) }
        return (1, sinceOrigin + lastRequestNanos.load(ordering: .acquiring))
    }

    func markEvicting() { evicting.store(true, ordering: .releasing) }
    var wasMarkedEvicting: Bool { evicting.load(ordering: .acquiring) }

    /// Closes this idle connection to make room for a newcomer (on `conn.queue`). A request
    /// that arrived since it was chosen keeps it open (the server is then one over its limit
    /// until a connection closes).
    func evict() {
        guard !conn.isClosed else { return }
        if inFlight > 0 || !waitingReplies.isEmpty {
            evicting.store(false, ordering: .releasing)
            server.evictionCancelled()
            return
        }
        if conn.isEstablished || conn.isPlaintext {
            sendError(RPCErrorPayload.connectionErrorType, 0, .resourceExhausted,
                      "the server is full and this was its oldest idle connection; closed to admit another (reconnect when needed)")
            conn.closeAfterFlush(linger: .milliseconds(500))
        } else {
            conn.close(.local("evicted during the handshake: the server is full"))
        }
    }

    /// Reports a connection closed for a security reason to `ServerConfig.securityLog`.
    private func logSecurity(_ reason: CloseReason) {
        guard let log = server.config.securityLog else { return }
        switch reason {
        case .handshakeFailed, .handshakeTimedOut, .recordRejected:
            log("closed connection from \(conn.peer): \(reason)")
        default:
            break
        }
    }

    func start() {
        conn.onPlaintextPeer = { [self] in
            server.config.securityLog?("refused a plaintext client from \(conn.peer): this node requires the encrypted channel (it was told so in a plaintext UNAUTHENTICATED error)")
        }
        conn.onMessage = { [self] m in received(m) }
        conn.onWritable = { [self] in pumpReplies() }
        conn.isBusy = { [self] in inFlight > 0 || !waitingReplies.isEmpty }
        // A client that half-closes after its requests still gets every reply (SPEC §1).
        conn.answersAfterEndOfStream = true
        conn.onProtocolError = { [self] e in
            sendError(RPCErrorPayload.connectionErrorType, 0, e.statusCode, ServerConnection.protocolErrorText(e))
            conn.closeAfterFlush()
        }
        conn.onClose = { [self] reason in
            logSecurity(reason)
            waitingReplies.removeAll()
            waitingBytes = 0
            server.connectionClosed(self)
        }
        conn.start()
    }

    /// The text of the connection-level error reply to a malformed stream: the byte offset
    /// and what was wrong; a frame of another protocol version gets exactly the text SPEC §2
    /// quotes (`FrameHeader.unsupportedVersionText`), so any version can recognise it.
    static func protocolErrorText(_ e: WireError) -> String {
        if e.kind == .unsupportedVersion { return e.message }
        let where_ = e.offset.map { "at byte offset \($0)" } ?? "at an unknown offset"
        return "malformed frame \(where_): \(e.message); closing the connection"
    }

    /// Refused (over a connection limit, or shutting down): say why, then close.
    func reject(_ why: String) {
        conn.onClose = { [self] reason in
            logSecurity(reason)
            server.rejectFinished()
        }
        conn.start()
        sendError(RPCErrorPayload.connectionErrorType, 0, .resourceExhausted, why)
        conn.closeAfterFlush(linger: .seconds(1))
    }

    private func received(_ m: InboundMessage) {
        guard m.kind == .request else { return }   // replies have no business here; ignore
        let limit = server.config.maxInFlightPerConnection
        if server.isDraining {
            server.noteRequest(started: false)
            sendError(m.type, m.requestID, .unavailable, "the server is shutting down; retry another peer")
            return
        }
        if inFlight >= limit {
            server.noteRequest(started: false)
            sendError(m.type, m.requestID, .resourceExhausted,
                      "\(limit) requests are already in flight on this connection; wait for replies before sending more")
            return
        }
        guard let handler = server.handler(for: m.type) else {
            server.noteRequest(started: false)
            sendError(m.type, m.requestID, .unimplemented,
                      "no handler for message type \(m.type.rawValue) (\(m.type.name)) on this server")
            return
        }
        inFlight += 1
        everRequested.store(true, ordering: .releasing)
        lastRequestNanos.store(Int64((ContinuousClock.now - opened).nanoseconds), ordering: .releasing)
        server.noteRequest(started: true)
        let responder = RPCResponder(ResponderState(owner: self, type: m.type, requestID: m.requestID,
                                                    remoteIdentity: conn.remoteIdentity, isControl: isControl))
        DispatchQueue.global().async { handler(m, responder) }
    }

    var peer: String { conn.peer }
    var limits: Limits { conn.limits }

    /// Called once per request from any thread with its reply.
    func finish(_ reply: OutboundMessage) {
        conn.queue.async { [self] in
            inFlight -= 1
            enqueue(reply)
            server.requestFinished()
        }
    }

    private func sendError(_ type: MessageType, _ id: UInt32, _ code: StatusCode, _ text: String) {
        enqueue(ServerConnection.errorMessage(type, id, code, text))
    }

    static func errorMessage(_ type: MessageType, _ id: UInt32, _ code: StatusCode, _ text: String) -> OutboundMessage {
        // A small payload with no compression cannot fail to encode.
        try! OutboundMessage(type: type, kind: .error, requestID: id, payload: RPCErrorPayload.encode(code, text))
    }

    private func enqueue(_ m: OutboundMessage) {
        guard !conn.isClosed else { return }
        if waitingReplies.isEmpty && conn.trySend(m) { return }
        waitingReplies.append(m)
        waitingBytes += m.wireBytes
        // A peer that keeps sending but never reads would grow this list; cut it off, by
        // count and by bytes (one large reply may always wait).
        if waitingReplies.count > 2 * server.config.maxInFlightPerConnection + 16
            || (waitingReplies.count > 1 && waitingBytes > server.config.maxQueuedBytes) {
            conn.close(.local("peer \(peer) does not read its replies (\(waitingReplies.count) replies, \(waitingBytes) bytes waiting)"))
        }
    }

    private func pumpReplies() {
        while let m = waitingReplies.first, !conn.isClosed, conn.hasRoom(for: m.wireBytes) {
            waitingReplies.removeFirst()
            waitingBytes -= m.wireBytes
            conn.trySend(m)
        }
    }
}

/// Shared state of one request's responder: answered at most once.
final class ResponderState: @unchecked Sendable {
    let owner: ServerConnection
    let type: MessageType
    let requestID: UInt32
    let remoteIdentity: [UInt8]?
    let isControl: Bool
    private let answered = Atomic<Bool>(false)

    init(owner: ServerConnection, type: MessageType, requestID: UInt32, remoteIdentity: [UInt8]? = nil, isControl: Bool = false) {
        self.owner = owner
        self.type = type
        self.requestID = requestID
        self.remoteIdentity = remoteIdentity
        self.isControl = isControl
    }

    /// True for the first caller only.
    func claim() -> Bool {
        !answered.exchange(true, ordering: .acquiringAndReleasing)
    }

    deinit {
        if !answered.load(ordering: .acquiring) {
            owner.finish(ServerConnection.errorMessage(type, requestID, .internal,
                                                       "the handler for \(type) dropped its responder without answering"))
        }
    }
}

/// Answers one request, exactly once: later calls are ignored. Dropping every copy of it
/// without answering sends INTERNAL to the client.
public struct RPCResponder: Sendable {
    let state: ResponderState

    init(_ state: ResponderState) { self.state = state }

    /// The client's address ("127.0.0.1:51234").
    public var peerAddress: String { state.owner.peer }

    /// The 32-byte Curve25519 static key the client proved in the secure handshake; nil on
    /// a plaintext or control-socket connection.
    public var remoteIdentity: [UInt8]? { state.remoteIdentity }

    /// True when the request came over the local Unix control socket (`startControl`).
    public var isControl: Bool { state.isControl }

    /// Sends `payload` as the reply (chunked per the limits; compressed if asked). An
    /// oversized payload turns into a RESOURCE_EXHAUSTED error reply.
    public func reply(_ payload: ByteSlice, options: RPCOptions = .init()) {
        guard state.claim() else { return }
        let m: OutboundMessage
        do {
            m = try OutboundMessage(type: state.type, kind: .response, requestID: state.requestID, payload: payload,
                                    compression: options.compression, checksum: options.checksum,
                                    limits: state.owner.limits)
        } catch {
            m = ServerConnection.errorMessage(state.type, state.requestID, error.statusCode, "the reply could not be sent: \(error)")
        }
        state.owner.finish(m)
    }

    /// Sends an error reply with `code` and `message`.
    public func fail(_ code: StatusCode, _ message: String) {
        guard state.claim() else { return }
        state.owner.finish(ServerConnection.errorMessage(state.type, state.requestID, code, message))
    }
}
