// A framed connection over one connected, non-blocking socket: Dispatch read and write
// sources on one serial queue, reads straight into the MessageDecoder, gather writes of
// queued frames (header and payload views, no joining), a bounded send queue, optional idle
// and stalled-frame timeouts, and a close that releases the fd only after both sources'
// cancel handlers ran.
import Dispatch
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

    var description: String {
        switch self {
        case .endOfStream: "the peer closed the connection"
        case .failed(let e): "socket error: \(e)"
        case .protocolError(let e): "protocol error: \(e)"
        case .timedOut(let s): s
        case .local(let s): s
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

    var queuedBytes: Int { sendQueue.queuedBytes }
    var peakQueuedBytes: Int { sendQueue.peakQueuedBytes }
    private(set) var bytesIn = 0
    private(set) var bytesOut = 0
    private let counters: IOCounters?

    private enum State { case idle, open, draining, closed }
    private var state: State = .idle
    var isOpen: Bool { state == .open }
    var isClosed: Bool { state == .closed }

    private let decoder: MessageDecoder
    /// The limits this connection decodes with.
    var limits: Limits { decoder.limits }
    private var readSource: DispatchSourceRead?
    private var writeSource: DispatchSourceWrite?
    private var timer: DispatchSourceTimer?
    private var writeArmed = false
    private var flushing = false

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

    init(fd: Int32, queue: DispatchQueue, peer: String, limits: Limits, buffers: ReceiveBuffers = .shared,
         maxQueuedBytes: Int = 64 << 20,
         counters: IOCounters? = nil, idleTimeout: Duration? = nil, frameTimeout: Duration? = nil) {
        self.descriptor = Descriptor(fd)
        self.queue = queue
        self.peer = peer
        self.sendQueue = SendQueue(maxQueuedBytes: maxQueuedBytes)
        self.decoder = MessageDecoder(limits: limits, buffers: buffers)
        ReceiveBufferTrimmer.start()
        self.counters = counters
        self.idleTimeout = idleTimeout
        self.frameTimeout = frameTimeout
        self.iov = .allocate(capacity: Sys.iovMax)
    }

    deinit { iov.deallocate() }

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
        descriptor.sourceAttached()
        descriptor.sourceAttached()
        let r = DispatchSource.makeReadSource(fileDescriptor: fd, queue: queue)
        let w = DispatchSource.makeWriteSource(fileDescriptor: fd, queue: queue)
        r.setEventHandler { [unowned self] in self.readable() }
        w.setEventHandler { [unowned self] in self.flush() }
        // The handlers keep the descriptor alive until both ran; only then is it closed.
        let d = descriptor
        r.setCancelHandler { d.sourceCancelled() }
        w.setCancelHandler { d.sourceCancelled() }
        readSource = r
        writeSource = w
        r.resume()
        if let shortest = [idleTimeout, frameTimeout].compactMap({ $0 }).min() {
            let t = DispatchSource.makeTimerSource(queue: queue)
            let tick = Swift.min(Swift.max(shortest / 4, .milliseconds(5)), .seconds(1))
            let ns = Int(tick.nanoseconds)
            t.schedule(deadline: .now() + .nanoseconds(ns), repeating: .nanoseconds(ns), leeway: .nanoseconds(ns / 4))
            t.setEventHandler { [unowned self] in self.checkTimeouts() }
            t.resume()
            timer = t
        }
        if !sendQueue.isEmpty { flush() }
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

    /// Writes as much as the kernel takes; arms the write source only while bytes remain.
    /// - Parameter notify: call `onWritable` after progress (not when called from `trySend`,
    ///   whose caller is already admitting messages).
    private func flush(notify: Bool = true) {
        onQueue()
        guard state == .open || state == .draining, !flushing else { return }
        flushing = true
        defer { flushing = false }
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
        if state == .draining { finishDrainWrites() }
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
        guard let w = writeSource, on != writeArmed else { return }
        writeArmed = on
        if on { w.resume() } else { w.suspend() }
    }

    // MARK: receiving

    private func readable() {
        onQueue()
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
                    close(.endOfStream)
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
            close(.timedOut("a frame or message from \(peer) started but did not finish within \(frameTimeout)"))
            return
        }
        // Queued output that makes no progress: the peer stopped reading.
        if let frameTimeout, !sendQueue.isEmpty, now - lastWriteProgress > frameTimeout {
            close(.timedOut("\(peer) read none of \(queuedBytes) queued bytes for \(frameTimeout); it stopped reading"))
            return
        }
        if let silentTimeout, !everCompleted, now - openedAt > silentTimeout {
            close(.timedOut("\(peer) sent no complete message within \(silentTimeout) of connecting"))
            return
        }
        if let idleTimeout, now - lastActivity > idleTimeout, !(isBusy?() ?? false), sendQueue.isEmpty {
            close(.timedOut("connection from \(peer) was idle for \(idleTimeout)"))
        }
    }

    // MARK: closing

    /// Stops delivering messages, sends what is queued, half-closes, discards input until
    /// the peer closes (so it can read our last reply), then closes; at most after `linger`.
    func closeAfterFlush(linger: Duration = .seconds(2)) {
        onQueue()
        guard state == .open else { return }
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
        halfClosed = true
        Sys.shutdownWrite(fd)
    }

    /// Closes now: cancels both sources (the fd is closed in the last cancel handler), fails
    /// pending send completions, then calls `onClose`. Idempotent.
    func close(_ reason: CloseReason) {
        onQueue()
        if state == .closed { return }
        let wasStarted = state != .idle
        state = .closed
        timer?.cancel()
        timer = nil
        if wasStarted {
            readSource?.cancel()
            writeSource?.cancel()
            if !writeArmed { writeSource?.resume() }   // a suspended source never runs its cancel handler
            writeArmed = true
        }
        descriptor.close()   // at once, or after both cancel handlers ran
        let left = sendQueue.removeAll()
        for c in left { c(false) }
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
