// A transparent TCP proxy for inspecting traffic: listens, connects each accepted client to
// the upstream, forwards both directions unchanged through bounded buffers (a full buffer
// stops reading that side: backpressure), and reports every chunk to an observer.
import Dispatch
import GossipWire
import Synchronization

/// Which way bytes flow through the proxy.
public enum ProxyDirection: Sendable, Equatable {
    case clientToServer
    case serverToClient
}

/// What the proxy observer is told, in order per connection.
public enum ProxyEvent: Sendable {
    /// A client connected and the upstream connection is up.
    case opened(connection: Int, client: String)
    /// Bytes passed through (in stream order for that direction).
    case data(connection: Int, direction: ProxyDirection, bytes: [UInt8])
    /// Both sides are closed.
    case closed(connection: Int, reason: String)
}

/// Forwards connections from a listening address to `upstream`, reporting every byte.
public final class FrameProxy: @unchecked Sendable {
    public let upstream: Endpoint
    let bufferBytes: Int
    let observer: @Sendable (ProxyEvent) -> Void
    private struct State {
        var listener: Listener?
        var nextID = 0
        var sessions: [Int: ProxySession] = [:]
    }
    private let state = Mutex(State())
    private let acceptQueue = DispatchQueue(label: "gossip.proxy.accept")

    /// - Parameters:
    ///   - bufferBytes: per-direction buffer; when full, the proxy stops reading that side.
    ///   - observer: called from internal queues; keep it short.
    public init(upstream: Endpoint, bufferBytes: Int = 1 << 20, observer: @escaping @Sendable (ProxyEvent) -> Void) {
        self.upstream = upstream
        self.bufferBytes = bufferBytes
        self.observer = observer
    }

    /// Listens on host:port (0: the OS picks); returns the bound endpoint.
    public func start(host: String, port: UInt16) throws(RPCError) -> Endpoint {
        let l = try Listener(host: host, port: port, queue: acceptQueue) { [self] fd, peer in accepted(fd, peer.description) }
        state.withLock { $0.listener = l }
        l.start()
        let (h, p) = l.address.hostAndPort
        return Endpoint(host: h, port: p)
    }

    /// Stops listening and closes every proxied connection.
    public func stop() {
        let (l, all) = state.withLock { s -> (Listener?, [ProxySession]) in
            let l = s.listener
            s.listener = nil
            return (l, Array(s.sessions.values))
        }
        l?.close()
        for s in all { s.queue.async { s.close("the proxy stopped") } }
    }

    private func accepted(_ fd: Int32, _ peer: String) {
        let id = state.withLock { s in s.nextID += 1; return s.nextID }
        let queue = DispatchQueue(label: "gossip.proxy.\(id)")
        Connector.connect(to: upstream, timeout: .seconds(10), queue: queue) { [self] r in
            switch r {
            case .failure(let e):
                Sys.close(fd)
                observer(.closed(connection: id, reason: "cannot reach upstream: \(e.message)"))
            case .success(let (up, _)):
                let s = ProxySession(id: id, client: fd, server: up, queue: queue, bufferBytes: bufferBytes, observer: observer) { [self] in
                    state.withLock { _ = $0.sessions.removeValue(forKey: id) }
                }
                state.withLock { $0.sessions[id] = s }
                observer(.opened(connection: id, client: peer))
                s.start()
            }
        }
    }
}

/// One proxied connection: two sockets, two directions. State on `queue`.
final class ProxySession: @unchecked Sendable {
    let id: Int
    let queue: DispatchQueue
    let observer: @Sendable (ProxyEvent) -> Void
    private let onDone: @Sendable () -> Void
    private var pipes: [Pipe] = []
    /// Client and server sockets; this session is their one owner.
    private let descriptors: [Descriptor]
    private var fds: [Int32] { [descriptors[0].raw, descriptors[1].raw] }
    /// Readiness of the client (0) and server (1) sockets: read interest for the pipe that
    /// reads it, write interest for the pipe that writes it.
    private var polls: [PollHandle] = []
    private var cancelsLeft = 2
    private var closed = false

    /// One direction: read `from`, buffer, write `to`.
    final class Pipe {
        let from: Int
        let to: Int
        let direction: ProxyDirection
        var buffer: ByteStorage
        var head = 0
        var tail = 0
        var reading = true
        var writing = false
        var eof = false
        init(from: Int, to: Int, direction: ProxyDirection, bytes: Int) {
            self.from = from
            self.to = to
            self.direction = direction
            self.buffer = ByteStorage(count: bytes)
        }
    }

    init(id: Int, client: Int32, server: Int32, queue: DispatchQueue, bufferBytes: Int,
         observer: @escaping @Sendable (ProxyEvent) -> Void, onDone: @escaping @Sendable () -> Void) {
        self.id = id
        self.queue = queue
        self.observer = observer
        self.onDone = onDone
        self.descriptors = [Descriptor(client), Descriptor(server)]
        pipes = [Pipe(from: 0, to: 1, direction: .clientToServer, bytes: bufferBytes),
                 Pipe(from: 1, to: 0, direction: .serverToClient, bytes: bufferBytes)]
    }

    func start() {
        dispatchPrecondition(condition: .onQueue(queue))
        for side in 0..<2 {
            let reader = pipes.first { $0.from == side }!
            let writer = pipes.first { $0.to == side }!
            polls.append(PollHandle(fd: fds[side], queue: queue) { [unowned self] r in
                if r.readable { readable(reader) }
                if r.writable { flush(writer) }
            })
        }
        for side in 0..<2 { updateInterest(side) }
    }

    private func updateInterest(_ side: Int) {
        guard side < polls.count else { return }
        polls[side].setInterest(read: pipes.first { $0.from == side }!.reading, write: pipes.first { $0.to == side }!.writing)
    }

    private func readable(_ p: Pipe) {
        guard !closed else { return }
        let free = UnsafeMutableRawBufferPointer(rebasing: p.buffer.mutableBytes[p.tail...])
        if free.isEmpty { setReading(p, false); return }
        do {
            switch try Sys.recv(fds[p.from], free) {
            case .wouldBlock: return
            case .done(0):
                p.eof = true
                setReading(p, false)
                if p.head == p.tail { Sys.shutdownWrite(fds[p.to]) }
                if pipes.allSatisfy({ $0.eof && $0.head == $0.tail }) { close("both sides closed") }
                return
            case .done(let n):
                observer(.data(connection: id, direction: p.direction, bytes: Array(free[0..<n])))
                p.tail += n
                flush(p)
            }
        } catch {
            close("\(error)")
        }
    }

    private func flush(_ p: Pipe) {
        guard !closed else { return }
        while p.head < p.tail {
            let data = UnsafeRawBufferPointer(rebasing: p.buffer.bytes[p.head..<p.tail])
            do {
                switch try Sys.send(fds[p.to], data) {
                case .wouldBlock:
                    setWriting(p, true)
                    if p.tail == p.buffer.count { setReading(p, false) }   // full: backpressure
                    return
                case .done(let n): p.head += n
                }
            } catch {
                close("\(error)")
                return
            }
        }
        p.head = 0
        p.tail = 0
        setWriting(p, false)
        if p.eof {
            Sys.shutdownWrite(fds[p.to])
            if pipes.allSatisfy({ $0.eof && $0.head == $0.tail }) { close("both sides closed") }
        } else {
            setReading(p, true)
        }
    }

    private func setReading(_ p: Pipe, _ on: Bool) {
        guard on != p.reading else { return }
        p.reading = on
        updateInterest(p.from)
    }

    private func setWriting(_ p: Pipe, _ on: Bool) {
        guard on != p.writing else { return }
        p.writing = on
        updateInterest(p.to)
    }

    func close(_ reason: String) {
        dispatchPrecondition(condition: .onQueue(queue))
        guard !closed else { return }
        closed = true
        observer(.closed(connection: id, reason: reason))
        if polls.isEmpty {   // never started
            for d in descriptors { d.close() }
            onDone()
            return
        }
        for side in 0..<2 {
            let d = descriptors[side]
            polls[side].cancel { [self] in
                d.close()
                cancelsLeft -= 1
                if cancelsLeft == 0 { onDone() }
            }
        }
    }
}
