// Readiness of connected sockets. On Linux: one epoll set of our own for every connected
// socket (connections, connects in progress, proxy sessions), driven by one Dispatch read
// source on the epoll descriptor; each socket's handler runs on its owner's serial queue.
// Elsewhere (Darwin): a Dispatch read and write source per socket, as before.
//
// Why not a Dispatch read and write source per socket on Linux: libdispatch's epoll backend
// (swift-corelibs-libdispatch, checked with Swift 6.3.1) handles an EPOLLHUP by merging the
// readable event and then the hang-up into the same source, one after the other, while the
// source woken by the first may already be acknowledging the second on another thread; the
// manager thread then finalizes the source a second time and the process dies with "BUG IN
// LIBDISPATCH: Source finalized twice" (SIGILL in _dispatch_source_refs_finalize_unregistration).
// A hang-up is any peer's reset, or its close after our half-close, so a stranger could
// trigger it at will; CloseStressTests reproduces it within seconds. Our own epoll set removes
// a socket synchronously (EPOLL_CTL_DEL) on its owner's queue before the descriptor closes, so
// no event can reach a closed or reused descriptor, and a hang-up is just another readiness.
import Dispatch
import Synchronization
#if os(Linux)
import CGossipPoll
#endif

/// What a socket is ready for (a hang-up or error counts as both, for what was asked).
struct Readiness: Sendable {
    var readable: Bool
    var writable: Bool
}

/// One socket's registration: read and write interest, and a handler called on `queue`
/// whenever the socket is ready for something asked (spurious calls are possible: handlers
/// must treat "would block" as nothing to do). `@unchecked Sendable`: all state is touched
/// only on `queue`.
final class PollHandle: @unchecked Sendable {
    let fd: Int32
    let queue: DispatchQueue
    private var handler: ((Readiness) -> Void)?
    private(set) var wantsRead = false
    private(set) var wantsWrite = false
    private(set) var isCancelled = false

    /// Registers `fd` with no interest yet; call `setInterest` to start.
    init(fd: Int32, queue: DispatchQueue, handler: @escaping (Readiness) -> Void) {
        self.fd = fd
        self.queue = queue
        self.handler = handler
        platformInit()
    }

    /// Sets what the handler is called for. Call on `queue`.
    func setInterest(read: Bool, write: Bool) {
        dispatchPrecondition(condition: .onQueue(queue))
        guard !isCancelled, read != wantsRead || write != wantsWrite else { return }
        let was = (wantsRead, wantsWrite)
        wantsRead = read
        wantsWrite = write
        interestChanged(from: was)
    }

    /// Stops all events; `then` runs once no event can reach `fd` any more (on Linux at once,
    /// before this returns), so it may close the descriptor or hand it on. Call on `queue`;
    /// idempotent (a second call's `then` is not run).
    func cancel(then: @escaping () -> Void) {
        dispatchPrecondition(condition: .onQueue(queue))
        guard !isCancelled else { return }
        isCancelled = true
        handler = nil
        platformCancel(then: then)
    }

    #if os(Linux)
    private var token: UInt64 = 0
    private var added = false
    private var inHandler = false

    private func platformInit() {
        token = Poller.shared.register(self)
    }

    private var mask: UInt32 {
        (wantsRead ? UInt32(GOSSIP_POLL_IN | GOSSIP_POLL_RDHUP) : 0) | (wantsWrite ? UInt32(GOSSIP_POLL_OUT) : 0)
    }

    private func interestChanged(from: (Bool, Bool)) {
        if !inHandler { arm() }   // inside the handler: re-armed when it returns
    }

    /// Enables the (one-shot) registration with the current interest. With no interest the
    /// socket is left disabled (a hang-up then waits until interest returns).
    private func arm() {
        let m = mask
        if added {
            _ = gossip_poll_modify(Poller.shared.ep, fd, m, token)
        } else if m != 0 {
            added = gossip_poll_add(Poller.shared.ep, fd, m, token) == 0
            if !added {
                // Not a socket epoll accepts (cannot happen for ours): report it as ready so
                // the owner's next syscall surfaces the error instead of waiting forever.
                let r = Readiness(readable: wantsRead, writable: wantsWrite)
                queue.async { [self] in if !isCancelled { handler?(r) } }
            }
        }
    }

    /// An event fired (the registration is now disabled): run the handler, then re-arm.
    fileprivate func deliver(_ events: UInt32) {
        guard !isCancelled else { return }
        let gone = events & UInt32(GOSSIP_POLL_HUP | GOSSIP_POLL_ERR) != 0
        let r = Readiness(readable: wantsRead && (gone || events & UInt32(GOSSIP_POLL_IN | GOSSIP_POLL_RDHUP) != 0),
                          writable: wantsWrite && (gone || events & UInt32(GOSSIP_POLL_OUT) != 0))
        if r.readable || r.writable {
            inHandler = true
            handler?(r)
            inHandler = false
        }
        if !isCancelled && mask != 0 { arm() }
    }

    private func platformCancel(then: @escaping () -> Void) {
        if added { _ = gossip_poll_remove(Poller.shared.ep, fd) }
        added = false
        Poller.shared.unregister(token)
        then()
    }
    #else
    private var readSource: DispatchSourceRead?
    private var writeSource: DispatchSourceWrite?
    private var readResumed = false
    private var writeResumed = false

    private func platformInit() {}

    private func interestChanged(from: (Bool, Bool)) {
        if wantsRead != readResumed {
            if readSource == nil {
                let s = DispatchSource.makeReadSource(fileDescriptor: fd, queue: queue)
                s.setEventHandler { [unowned self] in handler?(Readiness(readable: true, writable: false)) }
                readSource = s
            }
            readResumed = wantsRead
            if wantsRead { readSource!.resume() } else { readSource!.suspend() }
        }
        if wantsWrite != writeResumed {
            if writeSource == nil {
                let s = DispatchSource.makeWriteSource(fileDescriptor: fd, queue: queue)
                s.setEventHandler { [unowned self] in handler?(Readiness(readable: false, writable: true)) }
                writeSource = s
            }
            writeResumed = wantsWrite
            if wantsWrite { writeSource!.resume() } else { writeSource!.suspend() }
        }
    }

    private func platformCancel(then: @escaping () -> Void) {
        // The descriptor may be closed only after every source's cancel handler ran.
        let sources: [(any DispatchSourceProtocol, Bool)] = [readSource.map { ($0, readResumed) }, writeSource.map { ($0, writeResumed) }].compactMap { $0 }
        guard !sources.isEmpty else { then(); return }
        var left = sources.count
        for (s, resumed) in sources {
            s.setCancelHandler { left -= 1; if left == 0 { then() } }   // on `queue`, serially
            s.cancel()
            if !resumed { s.resume() }   // a suspended source never runs its cancel handler
        }
    }
    #endif
}

#if os(Linux)
/// The process's epoll set, and the one Dispatch read source that drains it. It lives as long
/// as the process: its descriptor never hangs up and its source is never cancelled.
final class Poller: @unchecked Sendable {
    static let shared = Poller()
    let ep: Int32
    private let handles = Mutex<[UInt64: PollHandle]>([:])
    private let nextToken = Atomic<UInt64>(1)
    private let queue = DispatchQueue(label: "gossip.net.poller", qos: .userInitiated)
    private let capacity = 256
    private let events: UnsafeMutablePointer<UInt32>
    private let tokens: UnsafeMutablePointer<UInt64>
    private var source: DispatchSourceRead?

    private init() {
        ep = gossip_poll_create()
        precondition(ep >= 0, "cannot create an epoll descriptor; the process is out of descriptors or memory")
        events = .allocate(capacity: capacity)
        tokens = .allocate(capacity: capacity)
        let s = DispatchSource.makeReadSource(fileDescriptor: ep, queue: queue)
        s.setEventHandler { [unowned self] in drain() }
        source = s
        s.resume()
    }

    func register(_ h: PollHandle) -> UInt64 {
        let t = nextToken.add(1, ordering: .relaxed).newValue
        handles.withLock { $0[t] = h }
        return t
    }

    func unregister(_ token: UInt64) {
        _ = handles.withLock { $0.removeValue(forKey: token) }
    }

    /// Collects what is ready and hands each event to its socket's queue. Level-triggered: if
    /// more than `capacity` are ready, the source fires again at once.
    private func drain() {
        let n = Int(gossip_poll_wait(ep, events, tokens, Int32(capacity), 0))
        guard n > 0 else { return }
        var ready: [(PollHandle, UInt32)] = []
        ready.reserveCapacity(n)
        handles.withLock { table in
            for i in 0..<n { if let h = table[tokens[i]] { ready.append((h, events[i])) } }
        }
        for (h, e) in ready { h.queue.async { h.deliver(e) } }
    }
}
#endif
