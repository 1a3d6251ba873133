// A minimal HTTP/1.1 responder for one read-only document (the Prometheus `GET /metrics`
// endpoint of issue 12), on our own socket layer: `Listener` accepts, each connection's
// readiness comes from a `PollHandle` (never a Dispatch read/write source on a connected
// socket, see Poller.swift). One request per connection, answered and closed.
//
// Threat model: the port is plaintext and unauthenticated (bind it to loopback or a private
// interface). What a stranger can do is bounded: a request head is at most `maxHeadBytes`
// (431 past it), a connection lives at most `deadline` from its accept (slowloris: closed,
// with 408 when nothing was answered yet), at most `maxConnections` are open at once (more
// get 503 and are closed), and the only thing served is the document `body` builds. Nothing
// from the request reaches the document: the method and path are only compared.
import Dispatch
import Synchronization
#if canImport(Glibc)
@preconcurrency import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Serves one document at one path over HTTP/1.1 (GET and HEAD), closing every connection
/// after its answer. All connection state lives on one serial queue.
public final class HTTPResponder: @unchecked Sendable {
    /// Bounds on what one client may make the responder hold.
    public struct Options: Sendable {
        /// Longest request head (request line and headers, with the blank line) read; past it: 431.
        public var maxHeadBytes = 8192
        /// A connection is closed this long after it was accepted, answered or not.
        public var deadline: Duration = .seconds(5)
        /// Connections open at once; more are answered 503 and closed at once.
        public var maxConnections = 64
        public init() {}
    }

    /// What `body` returns: the document and its media type.
    public struct Document: Sendable {
        public var contentType: String
        public var bytes: [UInt8]
        public init(contentType: String, bytes: [UInt8]) {
            self.contentType = contentType
            self.bytes = bytes
        }
    }

    /// The address the responder listens on (with the port the OS picked for port 0).
    public let endpoint: Endpoint
    private let path: String
    private let options: Options
    private let body: @Sendable () -> Document
    private let queue = DispatchQueue(label: "gossip.net.http")
    private var listener: Listener!
    private var connections: [ObjectIdentifier: HTTPConnection] = [:]
    private var closed = false
    private let counters = Mutex<Counters>(Counters())

    /// How many connections ended how (for tests and diagnostics).
    public struct Counters: Sendable, Equatable {
        public var served = 0, refusedOverCap = 0, timedOut = 0, badRequests = 0
        /// Connections taken from the listen backlog (served, refused or still open).
        public var accepted = 0
    }

    /// Binds `host:port` (port 0: the OS picks) and serves `body()` at `path`.
    /// - Throws: `RPCError(.unavailable)` when the address cannot be bound, saying which.
    public init(host: String, port: UInt16, path: String = "/metrics", options: Options = Options(),
                body: @escaping @Sendable () -> Document) throws(RPCError) {
        self.path = path
        self.options = options
        self.body = body
        var accept: ((Int32, SocketAddress) -> Void)?
        let l = try Listener(host: host, port: port, queue: queue) { fd, addr in accept?(fd, addr) }
        let (h, p) = l.address.hostAndPort
        endpoint = Endpoint(host: h, port: p)
        listener = l
        // Weak: an accept already queued when the responder goes away just closes the socket.
        accept = { [weak self] fd, _ in
            if let self { self.accepted(fd) } else { Sys.close(fd) }
        }
        l.start()
    }

    /// Connection outcomes so far.
    public var counts: Counters { counters.withLock { $0 } }

    /// Connections open now.
    public var openConnections: Int { queue.sync { connections.count } }

    /// Stops listening and closes every open connection.
    public func close() {
        listener.close()
        queue.async { [self] in
            closed = true
            for c in connections.values { c.finish() }
            connections.removeAll()
        }
    }

    private func accepted(_ fd: Int32) {
        dispatchPrecondition(condition: .onQueue(queue))
        if closed { Sys.close(fd); return }
        counters.withLock { $0.accepted += 1 }
        if connections.count >= options.maxConnections {
            // Best effort, never waiting: the client learns why before the close.
            let text = HTTPResponder.response(status: 503, reason: "Service Unavailable", contentType: "text/plain; charset=utf-8",
                                              body: Array("too many connections; try again later\n".utf8), includeBody: true, extra: [])
            text.withUnsafeBytes { _ = try? Sys.send(fd, $0) }
            Sys.close(fd)
            counters.withLock { $0.refusedOverCap += 1 }
            return
        }
        let c = HTTPConnection(fd: fd, queue: queue, owner: self)
        connections[ObjectIdentifier(c)] = c
        c.begin()
    }

    fileprivate func ended(_ c: HTTPConnection, outcome: HTTPConnection.Outcome) {
        dispatchPrecondition(condition: .onQueue(queue))
        connections[ObjectIdentifier(c)] = nil
        counters.withLock {
            switch outcome {
            case .served: $0.served += 1
            case .timedOut: $0.timedOut += 1
            case .bad: $0.badRequests += 1
            case .gone: break
            }
        }
    }

    fileprivate var limits: Options { options }

    /// Decides the answer to a complete request head (the bytes before the blank line).
    /// Returns the response bytes and whether it was a well-formed request.
    fileprivate func answer(head: ArraySlice<UInt8>) -> (bytes: [UInt8], ok: Bool) {
        switch HTTPRequestHead.parse(head) {
        case .failure(let why):
            let (code, reason) = why == .version ? (505, "HTTP Version Not Supported") : (400, "Bad Request")
            let msg = why == .version ? "only HTTP/1.0 and HTTP/1.1 are served\n" : "malformed request: \(why.rawValue)\n"
            return (HTTPResponder.response(status: code, reason: reason, contentType: "text/plain; charset=utf-8",
                                           body: Array(msg.utf8), includeBody: true, extra: []), false)
        case .success(let req):
            let isHead = req.method == "HEAD"
            guard req.method == "GET" || isHead else {
                return (HTTPResponder.response(status: 405, reason: "Method Not Allowed", contentType: "text/plain; charset=utf-8",
                                               body: Array("only GET and HEAD are served\n".utf8), includeBody: true,
                                               extra: [("Allow", "GET, HEAD")]), true)
            }
            let p = req.target.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? ""
            guard p == path else {
                return (HTTPResponder.response(status: 404, reason: "Not Found", contentType: "text/plain; charset=utf-8",
                                               body: Array("not found: this endpoint serves only \(path)\n".utf8), includeBody: !isHead, extra: []), true)
            }
            let doc = body()
            return (HTTPResponder.response(status: 200, reason: "OK", contentType: doc.contentType, body: doc.bytes,
                                           includeBody: !isHead, extra: []), true)
        }
    }

    static func response(status: Int, reason: String, contentType: String, body: [UInt8], includeBody: Bool,
                         extra: [(String, String)]) -> [UInt8] {
        var head = "HTTP/1.1 \(status) \(reason)\r\nContent-Type: \(contentType)\r\nContent-Length: \(body.count)\r\n"
        for (k, v) in extra { head += "\(k): \(v)\r\n" }
        head += "Connection: close\r\n\r\n"
        var out = Array(head.utf8)
        if includeBody { out += body }
        return out
    }
}

/// A parsed request line (headers are checked for syntax and otherwise ignored).
struct HTTPRequestHead: Equatable {
    var method: String
    var target: String
    var version: String

    enum Malformed: String, Error {
        case requestLine = "the request line is not 'METHOD /path HTTP/1.1'"
        case method = "the method is not a token"
        case target = "the target is not an origin-form path"
        case version = "unsupported HTTP version"
        case header = "a header line is not 'Name: value'"
        case bytes = "control or non-ASCII bytes in the head"
    }

    /// Parses `head` (request line and header lines, CRLF or LF separated, without the blank line).
    static func parse(_ head: ArraySlice<UInt8>) -> Result<HTTPRequestHead, Malformed> {
        // Only printable ASCII, tab, CR and LF: anything else is not HTTP/1.1.
        for b in head where !(b >= 0x20 && b < 0x7F) && b != 0x09 && b != 0x0D && b != 0x0A { return .failure(.bytes) }
        var lines = head.split(separator: 0x0A, omittingEmptySubsequences: false).map { l -> ArraySlice<UInt8> in
            l.last == 0x0D ? l.dropLast() : l
        }
        // RFC 9112 §2.2: ignore empty lines before the request line.
        while let f = lines.first, f.isEmpty { lines.removeFirst() }
        guard let first = lines.first else { return .failure(.requestLine) }
        let parts = first.split(separator: 0x20, omittingEmptySubsequences: false)
        guard parts.count == 3 else { return .failure(.requestLine) }
        let method = String(decoding: parts[0], as: UTF8.self)
        let target = String(decoding: parts[1], as: UTF8.self)
        let version = String(decoding: parts[2], as: UTF8.self)
        let tchar = Set("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ".utf8)
        guard !parts[0].isEmpty, parts[0].allSatisfy({ tchar.contains($0) }) else { return .failure(.method) }
        guard target.hasPrefix("/"), !target.contains("\t") else { return .failure(.target) }
        guard version.hasPrefix("HTTP/") else { return .failure(.requestLine) }
        guard version == "HTTP/1.1" || version == "HTTP/1.0" else { return .failure(.version) }
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: 0x3A), colon > line.startIndex,
                  line[line.startIndex..<colon].allSatisfy({ tchar.contains($0) }) else { return .failure(.header) }
        }
        return .success(HTTPRequestHead(method: method, target: target, version: version))
    }
}

/// One accepted connection: read a head, answer, half-close, drain until the client closes
/// or the deadline. `@unchecked Sendable`: touched only on the responder's queue.
private final class HTTPConnection: @unchecked Sendable {
    enum Outcome { case served, timedOut, bad, gone }
    private enum Phase { case reading, writing, draining, done }

    private let fd: Int32
    private let queue: DispatchQueue
    private unowned let owner: HTTPResponder
    private var handle: PollHandle?
    private var phase = Phase.reading
    private var head: [UInt8] = []
    private var out: [UInt8] = []
    private var sent = 0
    private var outcome = Outcome.gone
    private var timer: DispatchWorkItem?

    init(fd: Int32, queue: DispatchQueue, owner: HTTPResponder) {
        self.fd = fd
        self.queue = queue
        self.owner = owner
    }

    func begin() {
        dispatchPrecondition(condition: .onQueue(queue))
        let h = PollHandle(fd: fd, queue: queue) { [unowned self] r in self.ready(r) }
        handle = h
        let t = DispatchWorkItem { [weak self] in self?.expired() }
        timer = t
        let d = owner.limits.deadline.components
        let ns = Int(d.seconds) * 1_000_000_000 + Int(d.attoseconds / 1_000_000_000)
        queue.asyncAfter(deadline: .now() + .nanoseconds(ns), execute: t)
        h.setInterest(read: true, write: false)
    }

    private func ready(_ r: Readiness) {
        switch phase {
        case .reading: if r.readable { readHead() }
        case .writing: if r.writable { flush() }
        case .draining: if r.readable { _ = drain() }
        case .done: break
        }
    }

    private func readHead() {
        let limit = owner.limits.maxHeadBytes
        var chunk = [UInt8](repeating: 0, count: 4096)
        while phase == .reading {
            let n: Int
            switch recv(into: &chunk) {
            case .failure: finish(); return
            case .success(.wouldBlock): return
            case .success(.done(let k)): n = k
            }
            if n == 0 { finish(); return }   // closed before a whole head: nothing to answer
            let searchFrom = max(0, head.count - 3)
            head += chunk[0..<n]
            if let end = HTTPConnection.headEnd(head, from: searchFrom) {
                guard end.bodyStart <= limit else { tooLarge(); return }
                let (bytes, ok) = owner.answer(head: head[0..<end.headEnd])
                outcome = ok ? .served : .bad
                unreadInput = head.count > end.bodyStart
                respond(bytes)
                return
            }
            if head.count > limit { tooLarge(); return }
        }
    }

    private func tooLarge() {
        outcome = .bad
        unreadInput = true
        respond(HTTPResponder.response(status: 431, reason: "Request Header Fields Too Large", contentType: "text/plain; charset=utf-8",
                                       body: Array("the request head exceeds \(owner.limits.maxHeadBytes) bytes\n".utf8), includeBody: true, extra: []))
    }

    /// Where the head ends (the blank line: CRLFCRLF or LFLF), and where the body would start.
    static func headEnd(_ b: [UInt8], from: Int) -> (headEnd: Int, bodyStart: Int)? {
        var i = from
        while i < b.count {
            if b[i] == 0x0A {
                if i + 1 < b.count, b[i + 1] == 0x0A { return (i, i + 2) }
                if i + 2 < b.count, b[i + 1] == 0x0D, b[i + 2] == 0x0A { return (i, i + 3) }
            }
            i += 1
        }
        return nil
    }

    private func respond(_ bytes: [UInt8]) {
        out = bytes
        sent = 0
        phase = .writing
        head = []
        flush()
    }

    private func flush() {
        while sent < out.count {
            let fd = self.fd, from = sent
            let r = out.withUnsafeBytes { b in Result { () throws(SyscallError) in try Sys.send(fd, UnsafeRawBufferPointer(rebasing: b[from...])) } }
            switch r {
            case .failure: finish(); return
            case .success(.wouldBlock): handle?.setInterest(read: false, write: true); return
            case .success(.done(let k)): sent += k
            }
        }
        out = []
        Sys.shutdownWrite(fd)
        linger()
    }

    /// After the answer (half-closed): when the client sent nothing past what was read, close at
    /// once; else read away what it still sends (a body we do not read) until it closes, stays
    /// quiet for `lingerIdle`, or `lingerMax` passed, so our close does not reset the answer away.
    private func linger() {
        phase = .draining
        head = []
        let extra = unreadInput
        let g = lingerGeneration
        queue.asyncAfter(deadline: .now() + HTTPConnection.lingerMax) { [weak self] in
            if let self, self.phase == .draining, self.lingerGeneration >= g { self.finish() }
        }
        handle?.setInterest(read: true, write: false)
        if drain() == 0 && !extra { finish() }
    }

    static let lingerIdle = DispatchTimeInterval.milliseconds(250)
    static let lingerMax = DispatchTimeInterval.seconds(1)
    private var lingerGeneration = 0
    /// Bytes past the request head were read (a body, or a head over the limit).
    private var unreadInput = false

    /// Reads and discards what is there; returns how many bytes (closes on EOF or error).
    @discardableResult
    private func drain() -> Int {
        var chunk = [UInt8](repeating: 0, count: 4096)
        var total = 0
        while phase == .draining {
            switch recv(into: &chunk) {
            case .failure: finish(); return total
            case .success(.wouldBlock):
                lingerGeneration += 1
                let g = lingerGeneration
                queue.asyncAfter(deadline: .now() + HTTPConnection.lingerIdle) { [weak self] in
                    if let self, self.phase == .draining, self.lingerGeneration == g { self.finish() }
                }
                return total
            case .success(.done(let k)):
                if k == 0 { finish(); return total }
                total += k
            }
        }
        return total
    }

    private func recv(into chunk: inout [UInt8]) -> Result<IOResult<Int>, SyscallError> {
        let fd = self.fd
        return chunk.withUnsafeMutableBytes { b in Result { () throws(SyscallError) in try Sys.recv(fd, b) } }
    }

    private func expired() {
        guard phase != .done else { return }
        if phase == .reading {
            outcome = .timedOut
            let bytes = HTTPResponder.response(status: 408, reason: "Request Timeout", contentType: "text/plain; charset=utf-8",
                                               body: Array("no complete request within the deadline\n".utf8), includeBody: true, extra: [])
            bytes.withUnsafeBytes { _ = try? Sys.send(fd, $0) }
            Sys.shutdownWrite(fd)
            unreadInput = !head.isEmpty
            linger()
            return
        }
        finish()
    }

    /// Ends the connection: stops events, then closes the descriptor (its one owner).
    func finish() {
        dispatchPrecondition(condition: .onQueue(queue))
        guard phase != .done else { return }
        phase = .done
        timer?.cancel()
        timer = nil
        let fd = self.fd
        if let h = handle { h.cancel { Sys.close(fd) } } else { Sys.close(fd) }
        handle = nil
        owner.ended(self, outcome: outcome)
    }
}
