// A framed connection over one connected, non-blocking socket: readiness from the Poller
// (Poller.swift) delivered on one serial queue, reads straight into the MessageDecoder,
// gather writes of queued frames (header and payload views, no joining), a bounded send
// queue, optional idle and stalled-frame timeouts, and a close that releases the fd only once
// no readiness event can reach it. With a `ChannelSecurity` the same connection first runs
// the Noise handshake (SPEC §13.2: exact reads of the three fixed-length messages, a deadline, no frame
// decoded before it completes) and then carries the frame stream inside sealed records
// (§13.3): outbound messages are sealed in batches of up to 16 records (in parallel) into one
// reused buffer, inbound records are opened (in parallel when several are buffered) straight
// into the decoder's destination. A server-side connection (`answersAfterEndOfStream`) that
// reads the peer's half-close at a message boundary stops reading and closes only once every
// request was answered and written (SPEC §1), bounded by the idle timeout.
import Dispatch
import GossipSecure
import GossipWire
import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Why a connection closed.
enum CloseReason: Sendable, CustomStringConvertible {
    case endOfStream
    case failed(SyscallError)
    case protocolError(WireError)
    case timedOut(String)
    case local(String)
    /// The secure handshake failed (SPEC §13.6).
    case handshakeFailed(HandshakeFailure)
    /// No complete handshake within the deadline.
    case handshakeTimedOut(Duration)
    /// The initiator's owner refused the key the responder proved (`verifyPeer`).
    case peerRefused(String)
    /// A record failed authentication or was malformed (SPEC §13.6).
    case recordRejected(String)

    var description: String {
        switch self {
        case .endOfStream: "the peer closed the connection"
        case .failed(let e): "socket error: \(e)"
        case .protocolError(let e): "protocol error: \(e)"
        case .timedOut(let s): s
        case .local(let s): s
        case .handshakeFailed(let f): "secure handshake failed: \(f)"
        case .handshakeTimedOut(let d): "no complete secure handshake within \(d)"
        case .peerRefused(let s): s
        case .recordRejected(let s): s
        }
    }
}

/// Byte counters shared by the connections of one server.
final class IOCounters: Sendable {
    private let _in = Atomic<Int>(0)
    private let _out = Atomic<Int>(0)
    func add(in n: Int) { _in.add(n, ordering: .relaxed) }
    func add(out n: Int) { _out.add(n, ordering: .relaxed) }
    var bytesIn: Int { _in.load(ordering: .relaxed) }
    var bytesOut: Int { _out.load(ordering: .relaxed) }
}

/// A framed connection; `@unchecked Sendable` because all its state is touched only on
/// `queue` (checked with `dispatchPrecondition` in debug builds).
final class Connection: @unchecked Sendable {
    let queue: DispatchQueue
    /// The socket; this connection is its one owner.
    private let descriptor: Descriptor
    var fd: Int32 { descriptor.raw }
    /// The peer's address ("127.0.0.1:5555", or "local" for a socket pair).
    let peer: String
    /// The bound on queued outbound bytes: a message is admitted while it fits (or when the
    /// queue is empty, so one message larger than the bound still goes out alone).
    var maxQueuedBytes: Int { sendQueue.maxQueuedBytes }

    /// Called on `queue` for each complete message.
    var onMessage: ((InboundMessage) -> Void)?
    /// Called on `queue` when the byte stream turns out malformed; the connection then
    /// drains (stops reading messages) and closes once `closeAfterFlush` finishes, or
    /// closes at once if the handler does not call it.
    var onProtocolError: ((WireError) -> Void)?
    /// Called on `queue` after send-queue space was freed.
    var onWritable: (() -> Void)?
    /// Called once on `queue` when the connection closed.
    var onClose: ((CloseReason) -> Void)?
    /// For idle timeouts: whether the owner still has work outstanding.
    var isBusy: (() -> Bool)?
    /// Server side (SPEC §1): when the peer ends its stream (a close or a half-close,
    /// `shutdown(SHUT_WR)`) at a message boundary while `isBusy` says requests are unanswered
    /// or replies are still queued, stop reading but keep the connection open for writing,
    /// and close it once `isBusy` turns false and everything queued is written (checked after
    /// each flush), or once nothing was written for `idleTimeout` (a handler that never
    /// answers cannot pin the connection). False (clients): close at the end of the stream.
    var answersAfterEndOfStream = false

    var queuedBytes: Int { sendQueue.queuedBytes }
    var peakQueuedBytes: Int { sendQueue.peakQueuedBytes }
    private(set) var bytesIn = 0
    private(set) var bytesOut = 0
    private let counters: IOCounters?

    private enum State { case idle, open, draining, closed }
    private var state: State = .idle
    var isOpen: Bool { state == .open }
    var isClosed: Bool { state == .closed }

    /// The frame decoder; created at once for plaintext, only after the handshake for a
    /// secure connection (so an unauthenticated peer costs no 64 KiB staging buffer).
    private var decoder: MessageDecoder!
    private let buffers: ReceiveBuffers
    /// The limits this connection decodes with.
    let limits: Limits
    /// Readiness of the socket (Poller.swift): read interest from `start` on, write
    /// interest only while bytes wait for room in the socket.
    private var poll: PollHandle?
    private var timer: DispatchSourceTimer?
    private var writeArmed = false
    private var flushing = false
    /// The peer ended its stream and this side waits to answer (`answersAfterEndOfStream`):
    /// no read interest, no more reads.
    private(set) var readEnded = false

    /// What waits to be written (a pure value; this class performs the writes).
    private var sendQueue: SendQueue
    private let iov: UnsafeMutablePointer<iovec>

    private var lastActivity = ContinuousClock.now
    private var partialSince: ContinuousClock.Instant?
    private let openedAt = ContinuousClock.now
    /// Whether a whole message has ever arrived (for `silentTimeout`).
    private var everCompleted = false
    /// Last time queued output made progress (or became non-empty).
    private var lastWriteProgress = ContinuousClock.now
    /// A connection that has not delivered one whole message this long after opening is
    /// closed (idle sockets cannot hold connection slots); nil disables.
    var silentTimeout: Duration?
    private let idleTimeout: Duration?
    private let frameTimeout: Duration?

    // MARK: secure channel state (SPEC §13); all nil/empty on a plaintext connection

    /// The channel configuration; nil: plaintext frames.
    private let security: ChannelSecurity?
    /// Which side of the handshake this is (the TCP client is the initiator).
    private let role: HandshakeState.Role
    private var handshake: ChannelHandshake?
    private var handshakeOut: [UInt8] = []
    private var handshakeOutSent = 0
    private var handshakeTimer: DispatchSourceTimer?
    /// The handshake completed; records flow.
    private(set) var isEstablished = false
    /// No secure channel: frames flow from the start.
    var isPlaintext: Bool { security == nil }
    /// The static key the peer proved in the handshake.
    private(set) var remoteIdentity: [UInt8]?
    /// Records opened so far (the client tells "refused after the handshake" by 0).
    private(set) var recordsReceived: UInt64 = 0
    /// A plaintext client reached a secure server: the connection answers one plaintext
    /// error frame through the ordinary path and closes.
    private var answeringPlaintext = false
    /// `closeAfterFlush` was asked during the handshake: drain once it completes.
    private var drainAfterHandshake: Duration?
    private var sealer: RecordCipher?
    private var opener: RecordCipher?
    private var cipherOut = RawBuffer()
    private var cipherOutEnd = 0
    private var cipherOutSent = 0
    private var sealScratch = RawBuffer()
    /// Completions of messages already sealed, called once their records are written.
    private var sealedCompletions: [(Bool) -> Void] = []
    private var cipherIn = RawBuffer()
    private var inStart = 0
    private var inEnd = 0
    private var openScratch = RawBuffer()

    /// Initiator only: called on `queue` with the key the responder proved, before message 3
    /// is sent; a non-nil text refuses the peer (the connection closes with `.peerRefused`).
    var onPeerStatic: (([UInt8]) -> String?)?
    /// Called on `queue` once the handshake completed.
    var onEstablished: (() -> Void)?
    /// Called on `queue` when a plaintext client is answered and refused.
    var onPlaintextPeer: (() -> Void)?

    init(fd: Int32, queue: DispatchQueue, peer: String, limits: Limits, buffers: ReceiveBuffers = .shared,
         maxQueuedBytes: Int = 64 << 20,
         counters: IOCounters? = nil, idleTimeout: Duration? = nil, frameTimeout: Duration? = nil,
         security: ChannelSecurity? = nil, role: HandshakeState.Role = .responder) {
        self.descriptor = Descriptor(fd)
        self.queue = queue
        self.peer = peer
        self.sendQueue = SendQueue(maxQueuedBytes: maxQueuedBytes)
        self.limits = limits
        self.buffers = buffers
        self.security = security
        self.role = role
        if security == nil { self.decoder = MessageDecoder(limits: limits, buffers: buffers) }
        ReceiveBufferTrimmer.start()
        self.counters = counters
        self.idleTimeout = idleTimeout
        self.frameTimeout = frameTimeout
        self.iov = .allocate(capacity: Sys.iovMax)
    }

    deinit {
        iov.deallocate()
        cipherOut.free()
        cipherIn.free()
        sealScratch.free()
        openScratch.free()
    }

    @inline(__always) private func onQueue() {
        #if DEBUG
        dispatchPrecondition(condition: .onQueue(queue))
        #endif
    }

    /// Creates the sources and starts reading. Call on `queue`, once.
    func start() {
        onQueue()
        precondition(state == .idle)
        state = .open
        let h = PollHandle(fd: fd, queue: queue) { [unowned self] r in
            if r.readable { readable() }
            if r.writable && state != .closed { flush() }
        }
        poll = h
        h.setInterest(read: true, write: false)
        if let shortest = [idleTimeout, frameTimeout].compactMap({ $0 }).min() {
            let t = DispatchSource.makeTimerSource(queue: queue)
            let tick = Swift.min(Swift.max(shortest / 4, .milliseconds(5)), .seconds(1))
            let ns = Int(tick.nanoseconds)
            t.schedule(deadline: .now() + .nanoseconds(ns), repeating: .nanoseconds(ns), leeway: .nanoseconds(ns / 4))
            t.setEventHandler { [unowned self] in self.checkTimeouts() }
            t.resume()
            timer = t
        }
        if let security { startHandshake(security) }
        if state == .open && !sendQueue.isEmpty { flush() }
    }

    // MARK: sending

    /// Whether a message of `wireBytes` would be admitted now.
    func hasRoom(for wireBytes: Int) -> Bool { sendQueue.hasRoom(for: wireBytes) }

    /// Queues `message` (with `requestID` written into every header when given) if it fits
    /// the send-queue bound; returns false, queuing nothing, when it does not. On a closed
    /// connection it returns true and calls `completion(false)`.
    /// - Parameter completion: on `queue`: true once every byte was handed to the kernel,
    ///   false if the connection closed first.
    @discardableResult
    func trySend(_ message: OutboundMessage, requestID: UInt32? = nil, completion: ((Bool) -> Void)? = nil) -> Bool {
        onQueue()
        guard state == .open || state == .idle || (state == .draining && !halfClosed) else {
            completion?(false)
            return true
        }
        let wasEmpty = sendQueue.isEmpty
        guard sendQueue.enqueue(message, requestID: requestID, completion: completion) else { return false }
        if wasEmpty { lastWriteProgress = .now }
        if state != .idle && !writeArmed && !flushing { flush(notify: false) }
        return true
    }

    /// Writes as much as the kernel takes; asks for write readiness only while bytes remain.
    /// - Parameter notify: call `onWritable` after progress (not when called from `trySend`,
    ///   whose caller is already admitting messages).
    private func flush(notify: Bool = true) {
        onQueue()
        guard state == .open || state == .draining, !flushing else { return }
        flushing = true
        defer { flushing = false }
        if security != nil && !answeringPlaintext {
            flushSecure(notify: notify)
            return
        }
        while !sendQueue.isEmpty {
            let n = sendQueue.fill(iov, capacity: Sys.iovMax)
            let result: IOResult<Int>
            do { result = try Sys.sendmsg(fd, iov, n) } catch {
                close(.failed(error))
                return
            }
            switch result {
            case .wouldBlock:
                armWrite(true)
                return
            case .done(let written):
                bytesOut += written
                counters?.add(out: written)
                lastActivity = .now
                lastWriteProgress = lastActivity
                advance(by: written)
                if notify { onWritable?() }
                if state == .closed { return }
            }
        }
        armWrite(false)
        if state == .draining { finishDrainWrites() } else { closeIfAnswered() }
    }

    /// Hands the finished messages' completions their result and drops big payloads off-queue.
    private func advance(by written: Int) {
        for f in sendQueue.advance(by: written) {
            if f.message.frames.count > 1 || (f.message.frames.first?.payload.count ?? 0) >= Connection.backgroundReleaseBytes {
                Connection.releaseInBackground(f.message)
            }
            f.completion?(true)
        }
    }

    /// Sent messages of this size or more (or of several frames) are released on
    /// `releaseQueue`: unmapping a 400 MB payload takes tens of milliseconds, which must not
    /// hold up this connection's queue, typically just as the reply to that very request
    /// starts arriving.
    static let backgroundReleaseBytes = 4 << 20
    private static let releaseQueue = DispatchQueue(label: "gossip.net.release")

    /// Drops `message` on `releaseQueue`. Should the caller's own copies outlive the hand-off
    /// (nanoseconds against a thread wake-up), the memory is simply freed here instead.
    private static func releaseInBackground(_ message: OutboundMessage) {
        releaseQueue.async { withExtendedLifetime(message) {} }
    }

    private func armWrite(_ on: Bool) {
        guard let h = poll, on != writeArmed else { return }
        writeArmed = on
        h.setInterest(read: !readEnded, write: on)
    }

    // MARK: receiving

    private func readable() {
        onQueue()
        if readEnded { return }   // a spurious event after the read interest was dropped
        if security != nil && !answeringPlaintext && state == .open {
            if isEstablished { readRecords() } else { readHandshake() }
            return
        }
        var budget = 64 << 20
        var completedAny = false
        while budget > 0 && state != .closed {
            if state == .draining {
                // Discard whatever the peer still sends until it closes (lingering close).
                var scratch = (UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0))
                let r = withUnsafeMutableBytes(of: &scratch) { try? Sys.recv(fd, $0) }
                switch r {
                case .done(let n)? where n > 0: budget -= n; continue
                case .wouldBlock?: return
                default: close(.endOfStream); return
                }
            }
            let space = decoder.writableSpace()
            let result: IOResult<Int>
            do { result = try Sys.recv(fd, space) } catch {
                close(.failed(error))
                return
            }
            switch result {
            case .wouldBlock:
                budget = 0
            case .done(0):
                if decoder.hasPartialData, let e = (Result { () throws(WireError) in try decoder.finish() }).failureValue {
                    close(.protocolError(e))
                } else {
                    peerEndedStream()
                }
                return
            case .done(let n):
                budget -= n
                bytesIn += n
                counters?.add(in: n)
                lastActivity = .now
                do { try decoder.didWrite(n) } catch {
                    protocolError(error)
                    return
                }
                while state == .open, let m = decoder.nextMessage() {
                    completedAny = true
                    everCompleted = true
                    onMessage?(m)
                }
            }
        }
        if state == .open {
            if decoder.hasPartialData {
                if partialSince == nil || completedAny { partialSince = .now }
            } else {
                partialSince = nil
            }
        }
    }

    /// The peer ended its stream at a message boundary (every request it sent was delivered
    /// to `onMessage`). A client, or a server with nothing left to answer, closes now; a
    /// server that still owes replies stops reading and closes once they are written
    /// (`closeIfAnswered`), or when the half-close bound in `checkTimeouts` runs out.
    private func peerEndedStream() {
        guard answersAfterEndOfStream, state == .open, !decoder.hasPartialData else {
            close(.endOfStream)
            return
        }
        readEnded = true
        partialSince = nil
        lastActivity = .now   // the bound counts from the half-close (then from each write)
        poll?.setInterest(read: false, write: writeArmed)
        closeIfAnswered()
    }

    /// After the peer's half-close: closes once no request is unanswered (`isBusy`) and
    /// every queued byte was handed to the kernel. The peer's stream was read to its end, so
    /// the close sends a FIN after the replies, never a reset.
    private func closeIfAnswered() {
        guard readEnded, state == .open, sendQueue.isEmpty, cipherOutSent >= cipherOutEnd, handshakeOutSent >= handshakeOut.count,
              !(isBusy?() ?? false) else { return }
        close(.endOfStream)
    }

    private func protocolError(_ error: WireError) {
        if let h = onProtocolError {
            h(error)
            if state == .open { close(.protocolError(error)) }
        } else {
            close(.protocolError(error))
        }
    }

    private func checkTimeouts() {
        onQueue()
        guard state == .open else { return }
        let now = ContinuousClock.now
        if let frameTimeout, let since = partialSince, now - since > frameTimeout {
            if isEstablished && inEnd > inStart {
                close(.recordRejected("record \(opener!.nextNonce) from \(peer) started but did not arrive whole within \(frameTimeout) (its length prefix may have been altered)"))
                return
            }
            close(.timedOut("a frame or message from \(peer) started but did not finish within \(frameTimeout)"))
            return
        }
        // Queued output that makes no progress: the peer stopped reading.
        let outputPending = !sendQueue.isEmpty || cipherOutSent < cipherOutEnd
        if let frameTimeout, outputPending, now - lastWriteProgress > frameTimeout {
            close(.timedOut("\(peer) read none of \(queuedBytes) queued bytes for \(frameTimeout); it stopped reading"))
            return
        }
        // The auth deadline: the channel up and one whole request in. Once the channel is up,
        // a first request that is still arriving is bounded by `frameTimeout` instead (a
        // large model on a slow link may take longer than the deadline).
        let requestBegun = partialSince != nil && (security == nil || isEstablished)
        if let silentTimeout, !everCompleted, !requestBegun, now - openedAt > silentTimeout {
            close(.timedOut("\(peer) sent no complete message within \(silentTimeout) of connecting"))
            return
        }
        if readEnded, let idleTimeout, now - lastActivity > idleTimeout {
            // The half-close bound: the peer can send nothing more, and no reply was written
            // for `idleTimeout` (a handler that never answers).
            close(.timedOut("\(peer) half-closed the connection and its remaining requests were not answered within \(idleTimeout); closed without their replies"))
            return
        }
        if let idleTimeout, now - lastActivity > idleTimeout, !(isBusy?() ?? false), !outputPending {
            close(.timedOut("connection from \(peer) was idle for \(idleTimeout)"))
        }
    }

    // MARK: closing

    /// Stops delivering messages, sends what is queued, half-closes, discards input until
    /// the peer closes (so it can read our last reply), then closes; at most after `linger`.
    func closeAfterFlush(linger: Duration = .seconds(2)) {
        onQueue()
        guard state == .open else { return }
        if security != nil && !isEstablished && !answeringPlaintext {
            // Queued replies can go out only sealed: finish the handshake first (its
            // deadline still applies), then drain.
            drainAfterHandshake = linger
            return
        }
        state = .draining
        onMessage = nil
        queue.asyncAfter(deadline: .now() + linger.dispatch) { [self] in
            if state != .closed { close(.local("closed after a protocol error")) }
        }
        if sendQueue.isEmpty { finishDrainWrites() } else if !writeArmed { flush() }
    }

    private var halfClosed = false
    private func finishDrainWrites() {
        guard !halfClosed else { return }
        if cipherOutSent < cipherOutEnd || handshakeOutSent < handshakeOut.count { return }
        halfClosed = true
        Sys.shutdownWrite(fd)
        // The peer's stream already ended and is no longer read: nothing to linger for.
        if readEnded { close(.endOfStream) }
    }

    /// Closes now: stops readiness events and closes the fd (Poller.swift), fails
    /// pending send completions, then calls `onClose`. Idempotent.
    func close(_ reason: CloseReason) {
        onQueue()
        if state == .closed { return }
        let wasStarted = state != .idle
        state = .closed
        timer?.cancel()
        timer = nil
        handshakeTimer?.cancel()
        handshakeTimer = nil
        if wasStarted, let h = poll {
            let d = descriptor
            h.cancel { d.close() }   // at once on Linux; after the sources' cancel handlers elsewhere
        } else {
            descriptor.close()
        }
        writeArmed = true
        let sealed = sealedCompletions
        sealedCompletions = []
        for c in sealed { c(false) }
        let left = sendQueue.removeAll()
        for c in left { c(false) }
        onPeerStatic = nil
        onEstablished = nil
        onPlaintextPeer = nil
        onMessage = nil
        onWritable = nil
        onProtocolError = nil
        isBusy = nil
        let h = onClose
        onClose = nil
        h?(reason)
    }
}

extension Result {
    var failureValue: Failure? {
        if case .failure(let e) = self { return e }
        return nil
    }
}

// MARK: - The secure channel (SPEC §13)

extension Connection {
    /// Starts the handshake: the deadline, and message 1 for the initiator.
    private func startHandshake(_ security: ChannelSecurity) {
        do {
            handshake = try ChannelHandshake(role: role, security: security)
        } catch {
            close(.handshakeFailed(.noise("cannot start the handshake: \(error.message)")))
            return
        }
        let t = DispatchSource.makeTimerSource(queue: queue)
        let limit = security.handshakeTimeout
        t.schedule(deadline: .now() + limit.dispatch)
        t.setEventHandler { [unowned self] in
            if !self.isEstablished && !self.answeringPlaintext && self.state != .closed { self.close(.handshakeTimedOut(limit)) }
        }
        t.resume()
        handshakeTimer = t
        if role == .initiator {
            do { sendHandshake(try handshake!.start()) } catch {
                close(.handshakeFailed(.noise("cannot write handshake message 1: \(error.message)")))
            }
        }
    }

    private func sendHandshake(_ bytes: [UInt8]) {
        handshakeOut += bytes
        flush(notify: false)
    }

    /// Reads exactly the bytes the current handshake message still needs (never more, so
    /// nothing past the handshake is taken from the kernel before it completes).
    private func readHandshake() {
        var scratch = (UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0),
                       UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0))   // 104 >= 2 + 96 bytes
        while state == .open, !isEstablished, !answeringPlaintext, let want = handshake?.wanted, want > 0 {
            let result = withUnsafeMutableBytes(of: &scratch) { raw in
                Result { () throws(SyscallError) in try Sys.recv(fd, UnsafeMutableRawBufferPointer(rebasing: raw[0..<want])) }
            }
            let n: Int
            switch result {
            case .failure(let e): close(.failed(e)); return
            case .success(.wouldBlock): return
            case .success(.done(0)):
                close(.handshakeFailed(.malformed("\(peer) closed the connection during the handshake")))
                return
            case .success(.done(let k)): n = k
            }
            bytesIn += n
            counters?.add(in: n)
            lastActivity = .now
            let outcome = withUnsafeBytes(of: &scratch) { raw in handshake!.consume(UnsafeRawBufferPointer(rebasing: raw[0..<n])) }
            switch outcome {
            case .needMore:
                continue
            case .send(let bytes):
                sendHandshake(bytes)
            case .verify(let key):
                if let why = onPeerStatic?(key) {
                    close(.peerRefused(why))
                    return
                }
                do {
                    let (message, transport) = try handshake!.finish()
                    handshakeOut += message
                    established(transport)
                } catch {
                    close(.handshakeFailed(.noise("cannot write handshake message 3: \(error.message)")))
                }
                return
            case .established(let transport):
                established(transport)
                return
            case .failed(.plaintextPeer) where role == .responder:
                answerPlaintextPeer()
                return
            case .failed(let f):
                close(.handshakeFailed(f))
                return
            }
        }
    }

    /// The handshake completed: set up the record layer, log keys, send what waits.
    private func established(_ t: NoiseTransport) {
        guard let security else { return }
        isEstablished = true
        handshakeTimer?.cancel()
        handshakeTimer = nil
        remoteIdentity = t.remoteStaticKey
        sealer = RecordCipher(t.sender, rekeyInterval: security.rekeyInterval)
        opener = RecordCipher(t.receiver, rekeyInterval: security.rekeyInterval)
        if let log = security.keyLog, let e = handshake?.initiatorEphemeral {
            let i2r = role == .initiator ? t.sender : t.receiver
            let r2i = role == .initiator ? t.receiver : t.sender
            log.append(SecureChannel.keyLogLine(initiatorEphemeral: e, initiatorToResponder: i2r, responderToInitiator: r2i))
        }
        handshake = nil
        decoder = MessageDecoder(limits: limits, buffers: buffers)
        onEstablished?()
        guard state == .open else { return }
        if let linger = drainAfterHandshake {
            drainAfterHandshake = nil
            closeAfterFlush(linger: linger)
        } else {
            flush(notify: false)
        }
    }

    /// A plaintext client reached this secure server: one plaintext connection-level error
    /// frame UNAUTHENTICATED, then close (draining its input so the reply is not reset).
    private func answerPlaintextPeer() {
        answeringPlaintext = true
        handshake = nil
        handshakeTimer?.cancel()
        handshakeTimer = nil
        onPlaintextPeer?()
        guard state == .open else { return }
        // A small payload with no compression cannot fail to encode.
        let m = try! OutboundMessage(type: RPCErrorPayload.connectionErrorType, kind: .error, requestID: 0,
                                     payload: RPCErrorPayload.encode(.unauthenticated, SecureChannel.plaintextClientText))
        _ = sendQueue.removeAll()   // nothing queued for this peer may go out in plaintext
        _ = sendQueue.enqueue(m)
        // Send it, half-close, and discard input until the peer closes (so the close does not
        // reset the connection before the reply is read). This once crashed libdispatch, whose
        // per-socket sources mishandle a hang-up; sockets are on the Poller now (Poller.swift).
        closeAfterFlush(linger: .seconds(1))
    }

    // MARK: writing records

    /// Writes handshake bytes, then sealed records; seals the next batch whenever the
    /// previous one is fully written.
    private func flushSecure(notify: Bool) {
        while state != .closed {
            if handshakeOutSent < handshakeOut.count {
                guard let w = writeRaw(handshakeOut, from: handshakeOutSent) else { return }
                handshakeOutSent += w
                if handshakeOutSent == handshakeOut.count {
                    handshakeOut = []
                    handshakeOutSent = 0
                }
                continue
            }
            if cipherOutSent < cipherOutEnd {
                let result: IOResult<Int>
                do {
                    result = try Sys.send(fd, UnsafeRawBufferPointer(start: cipherOut.base! + cipherOutSent, count: cipherOutEnd - cipherOutSent))
                } catch {
                    close(.failed(error))
                    return
                }
                switch result {
                case .wouldBlock:
                    armWrite(true)
                    return
                case .done(let w):
                    bytesOut += w
                    counters?.add(out: w)
                    lastActivity = .now
                    lastWriteProgress = lastActivity
                    cipherOutSent += w
                    if cipherOutSent == cipherOutEnd {
                        cipherOutSent = 0
                        cipherOutEnd = 0
                        let done = sealedCompletions
                        sealedCompletions = []
                        for c in done { c(true) }
                        if notify { onWritable?() }
                    }
                }
                continue
            }
            if !isEstablished || sendQueue.isEmpty { break }
            if !sealBatch() { return }
        }
        guard state != .closed else { return }
        armWrite(false)
        if state == .draining && sendQueue.isEmpty { finishDrainWrites() } else { closeIfAnswered() }
    }

    /// Sends from a byte array; nil when the connection closed or the socket is full (the
    /// write readiness is then asked for).
    private func writeRaw(_ bytes: [UInt8], from offset: Int) -> Int? {
        let result = bytes.withUnsafeBytes { b in
            Result { () throws(SyscallError) in try Sys.send(fd, UnsafeRawBufferPointer(rebasing: b[offset...])) }
        }
        switch result {
        case .failure(let error):
            close(.failed(error))
            return nil
        case .success(.wouldBlock):
            armWrite(true)
            return nil
        case .success(.done(let w)):
            bytesOut += w
            counters?.add(out: w)
            lastActivity = .now
            lastWriteProgress = lastActivity
            return w
        }
    }

    /// Seals up to `SecureChannel.batchRecords` records of queued plaintext into `cipherOut`
    /// (`u16be length || ciphertext || tag` each). Records lying inside one queued buffer are
    /// sealed from it in place; a record that spans buffers (a frame header and the start of
    /// its payload) is gathered into `sealScratch` first. Returns false when it closed.
    private func sealBatch() -> Bool {
        let r = SecureChannel.maxRecordPlaintext
        let maxRecords = Swift.min(SecureChannel.batchRecords, sealer!.recordsBeforeRekey)
        let pieces = sendQueue.fill(iov, capacity: Sys.iovMax, maxBytes: maxRecords * r)
        var available = 0
        for k in 0..<pieces { available += iov[k].iov_len }
        let take = Swift.min(available, maxRecords * r)
        guard take > 0 else {
            // Only empty frames cannot happen (every frame has a 24-byte header); be safe.
            for f in sendQueue.advance(by: 0) { f.completion?(true) }
            return true
        }
        let count = (take + r - 1) / r
        let length = { (i: Int) in i == count - 1 ? take - i * r : r }
        // Pass 1: which records span pieces (they need the scratch buffer).
        var spanning = 0
        do {
            var piece = 0, offset = 0
            for i in 0..<count {
                var left = length(i)
                if iov[piece].iov_len - offset < left { spanning += 1 }
                while left > 0 {
                    let step = Swift.min(left, iov[piece].iov_len - offset)
                    left -= step
                    offset += step
                    if offset == iov[piece].iov_len { piece += 1; offset = 0 }
                }
            }
        }
        if spanning > 0 { sealScratch.ensure(spanning * r) }
        cipherOut.ensure(take + count * (2 + NoiseCipher.tagLength))
        // Pass 2: plaintext pointers and output slots.
        var records: [UnsafeRawBufferPointer] = []
        var outputs: [UnsafeMutableRawPointer] = []
        records.reserveCapacity(count)
        outputs.reserveCapacity(count)
        var piece = 0, offset = 0, out = 0, slot = 0
        let base = cipherOut.base!
        for i in 0..<count {
            let len = length(i)
            let body = len + NoiseCipher.tagLength
            base.storeBytes(of: UInt8(body >> 8), toByteOffset: out, as: UInt8.self)
            base.storeBytes(of: UInt8(body & 0xFF), toByteOffset: out + 1, as: UInt8.self)
            outputs.append(base + out + 2)
            out += 2 + body
            let pieceBase = UnsafeRawPointer(iov[piece].iov_base!)
            if iov[piece].iov_len - offset >= len {
                records.append(UnsafeRawBufferPointer(start: pieceBase + offset, count: len))
                offset += len
                if offset == iov[piece].iov_len { piece += 1; offset = 0 }
            } else {
                let dst = sealScratch.base! + slot * r
                slot += 1
                var filled = 0
                while filled < len {
                    let step = Swift.min(len - filled, iov[piece].iov_len - offset)
                    (dst + filled).copyMemory(from: UnsafeRawPointer(iov[piece].iov_base!) + offset, byteCount: step)
                    filled += step
                    offset += step
                    if offset == iov[piece].iov_len { piece += 1; offset = 0 }
                }
                records.append(UnsafeRawBufferPointer(start: dst, count: len))
            }
        }
        do {
            try sealer!.seal(records, into: outputs)
        } catch {
            close(.local("cannot seal record \(sealer!.nextNonce) to \(peer): \(error.message)"))
            return false
        }
        cipherOutEnd = out
        cipherOutSent = 0
        for f in sendQueue.advance(by: take) {
            if f.message.frames.count > 1 || (f.message.frames.first?.payload.count ?? 0) >= Connection.backgroundReleaseBytes {
                Connection.releaseInBackground(f.message)
            }
            if let c = f.completion { sealedCompletions.append(c) }
        }
        return true
    }

    // MARK: reading records

    /// Receives ciphertext, opens every whole record and feeds the plaintext to the decoder.
    private func readRecords() {
        var budget = 64 << 20
        var completedAny = false
        let recordBytes = SecureChannel.fullRecordWireBytes
        if cipherIn.capacity == 0 { cipherIn.ensure(2 * recordBytes) }
        while budget > 0 && state == .open {
            if cipherIn.capacity - inEnd < recordBytes && inStart > 0 {
                // Move the partial record to the front so a whole record fits behind it.
                let base = cipherIn.base!
                base.copyMemory(from: base + inStart, byteCount: inEnd - inStart)
                inEnd -= inStart
                inStart = 0
            }
            let room = cipherIn.capacity - inEnd
            let result: IOResult<Int>
            do { result = try Sys.recv(fd, UnsafeMutableRawBufferPointer(start: cipherIn.base! + inEnd, count: room)) } catch {
                close(.failed(error))
                return
            }
            switch result {
            case .wouldBlock:
                budget = 0
            case .done(0):
                if inEnd > inStart {
                    close(.recordRejected("the stream from \(peer) ended inside encrypted record \(opener!.nextNonce)"))
                } else if decoder.hasPartialData, let e = (Result { () throws(WireError) in try decoder.finish() }).failureValue {
                    close(.protocolError(e))
                } else {
                    peerEndedStream()
                }
                return
            case .done(let n):
                budget -= n
                bytesIn += n
                counters?.add(in: n)
                lastActivity = .now
                inEnd += n
                if n == room && cipherIn.capacity < SecureChannel.batchRecords * recordBytes {
                    // A busy stream: hold a whole batch so records open in parallel.
                    cipherIn.grow(to: SecureChannel.batchRecords * recordBytes, keeping: inEnd)
                }
                guard openRecords(&completedAny) else { return }
            }
        }
        if state == .open {
            if decoder.hasPartialData || inEnd > inStart {
                if partialSince == nil || completedAny { partialSince = .now }
            } else {
                partialSince = nil
            }
        }
    }

    /// Opens the whole records in `cipherIn`; false when the connection closed.
    private func openRecords(_ completedAny: inout Bool) -> Bool {
        let tag = NoiseCipher.tagLength
        while state == .open {
            let base = cipherIn.base!
            let maxCount = Swift.min(SecureChannel.batchRecords, opener!.recordsBeforeRekey)
            var found: [(offset: Int, length: Int)] = []
            var at = inStart
            while found.count < maxCount, inEnd - at >= 2 {
                let length = Int(base.load(fromByteOffset: at, as: UInt8.self)) << 8 | Int(base.load(fromByteOffset: at + 1, as: UInt8.self))
                if length < SecureChannel.minRecordLength {
                    close(.recordRejected("record \(opener!.nextNonce + UInt64(found.count)) from \(peer) declares \(length) bytes; a record holds 17 to 65535 (at least one plaintext byte and the 16-byte tag): the peer is broken or hostile"))
                    return false
                }
                guard inEnd - at - 2 >= length else { break }
                found.append((at + 2, length))
                at += 2 + length
            }
            if found.isEmpty {
                if inStart == inEnd { inStart = 0; inEnd = 0 }
                return true
            }
            let first = opener!.nextNonce
            let space = decoder.writableSpace()
            var fit = 0, total = 0
            for rec in found {
                guard total + rec.length - tag <= space.count else { break }
                total += rec.length - tag
                fit += 1
            }
            if fit > 0 {
                // Straight into the decoder's destination (a large payload's final place).
                var records: [UnsafeRawBufferPointer] = []
                var outputs: [UnsafeMutableRawPointer] = []
                var o = 0
                for rec in found[0..<fit] {
                    records.append(UnsafeRawBufferPointer(start: base + rec.offset, count: rec.length))
                    outputs.append(space.baseAddress! + o)
                    o += rec.length - tag
                }
                if let f = opener!.open(records, into: outputs) {
                    rejectRecord(first + UInt64(f.index), f.error)
                    return false
                }
                recordsReceived += UInt64(fit)
                inStart = found[fit - 1].offset + found[fit - 1].length
                do { try decoder.didWrite(total) } catch {
                    protocolError(error)
                    return false
                }
            } else {
                // The decoder's current space (e.g. a header) is smaller than the record.
                let rec = found[0]
                openScratch.ensure(SecureChannel.maxRecordPlaintext)
                if let f = opener!.open([UnsafeRawBufferPointer(start: base + rec.offset, count: rec.length)], into: [openScratch.base!]) {
                    rejectRecord(first, f.error)
                    return false
                }
                recordsReceived += 1
                inStart = rec.offset + rec.length
                do { try decoder.append(UnsafeRawBufferPointer(start: openScratch.base!, count: rec.length - tag)) } catch {
                    protocolError(error)
                    return false
                }
            }
            while state == .open, let m = decoder.nextMessage() {
                completedAny = true
                everCompleted = true
                onMessage?(m)
            }
        }
        return false
    }

    private func rejectRecord(_ nonce: UInt64, _ error: NoiseError) {
        close(.recordRejected("record \(nonce) from \(peer) failed authentication (\(error.message))"))
    }
}

/// A growable raw byte buffer owned by one connection (freed by its owner).
struct RawBuffer {
    private(set) var base: UnsafeMutableRawPointer?
    private(set) var capacity = 0

    /// At least `bytes` of capacity; the content is not kept.
    mutating func ensure(_ bytes: Int) {
        guard bytes > capacity else { return }
        base?.deallocate()
        base = .allocate(byteCount: bytes, alignment: 64)
        capacity = bytes
    }

    /// At least `bytes` of capacity, keeping the first `keeping` bytes.
    mutating func grow(to bytes: Int, keeping: Int) {
        guard bytes > capacity else { return }
        let fresh = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64)
        if let base, keeping > 0 { fresh.copyMemory(from: base, byteCount: keeping) }
        base?.deallocate()
        base = fresh
        capacity = bytes
    }

    mutating func free() {
        base?.deallocate()
        base = nil
        capacity = 0
    }
}
