// A UDP socket for SWIM (SPEC §5.10): bound to the TCP listener's address and port number,
// read with a Dispatch read source (allowed for unconnected UDP sockets: there is no hang-up
// to crash libdispatch, see Poller.swift), written with non-blocking sendto that drops a
// datagram when the socket buffer is full (UDP promises nothing; SWIM tolerates loss).
// The UDP syscalls (sendto, recvfrom) are wrapped here, next to their only user, with the
// same rules as Syscalls.swift: errno read at once, EINTR retried, EAGAIN a result.
import Dispatch
import GossipWire
import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Where a datagram came from or goes to (an IPv4 or IPv6 socket address).
public struct DatagramAddress: Sendable, CustomStringConvertible {
    var address: SocketAddress

    /// "127.0.0.1:9000" or "[::1]:9000".
    public var description: String { address.description }

    /// Resolves `endpoint` (numeric hosts without DNS; a name with the system resolver, which
    /// may block: call it off any connection's queue). IPv4 first.
    /// - Throws: `RPCError(.unavailable)` when the name resolves to nothing.
    public static func resolve(_ endpoint: Endpoint) throws(RPCError) -> DatagramAddress {
        guard let a = try Sys.resolve(host: endpoint.host, port: endpoint.port).first else {
            throw RPCError(.unavailable, "host '\(endpoint.host)' resolves to no IPv4 or IPv6 address")
        }
        return DatagramAddress(address: a)
    }

    /// `endpoint`'s address when its host is a numeric IPv4 or IPv6 address (parsed, never
    /// looked up: safe on any queue); nil for a host name.
    public static func numeric(_ endpoint: Endpoint) -> DatagramAddress? {
        guard Sys.isNumericHost(endpoint.host) else { return nil }
        return try? resolve(endpoint)
    }
}

/// A bound UDP socket whose datagrams are handed to `onDatagram` on `queue`.
/// `@unchecked Sendable`: everything, `send` included, runs on `queue` (so a send never races
/// the close and hits a reused descriptor number); the counters are atomics.
public final class DatagramSocket: @unchecked Sendable {
    private let descriptor: Descriptor
    public let queue: DispatchQueue
    /// The bound port.
    public let port: UInt16
    /// Largest datagram accepted; a longer one is dropped (counted in `truncated`).
    public let maxDatagram: Int
    private var source: DispatchSourceRead?
    private var closed = false
    private let onDatagram: ([UInt8], DatagramAddress) -> Void
    private let family: Int32
    /// Datagrams sent, dropped on a full buffer or an error, received, and dropped as too long.
    public let sent = Atomic<Int>(0)
    public let sendDropped = Atomic<Int>(0)
    public let received = Atomic<Int>(0)
    public let truncated = Atomic<Int>(0)

    /// Binds a UDP socket to host:port (port 0: the OS picks).
    /// - Throws: `RPCError(.unavailable)` saying why (the port is taken, the host unknown).
    public init(host: String, port: UInt16, maxDatagram: Int = 1400, queue: DispatchQueue,
                onDatagram: @escaping ([UInt8], DatagramAddress) -> Void) throws(RPCError) {
        let addrs = try Sys.resolve(host: host, port: port, passive: true)
        guard let addr = addrs.first else {
            throw RPCError(.invalidArgument, "host '\(host)' resolves to no IPv4 or IPv6 address")
        }
        var fd: Int32 = -1
        let bound: SocketAddress
        do {
            #if canImport(Glibc)
            let type = Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue)
            fd = try Sys.must("socket") { Glibc.socket(addr.family, type, 0) }
            #else
            fd = try Sys.must("socket") { Darwin.socket(addr.family, SOCK_DGRAM, 0) }
            try Sys.makeNonBlockingCloexec(fd)
            #endif
            if addr.family == AF_INET6 { try? Sys.setInt(fd, Int32(IPPROTO_IPV6), IPV6_V6ONLY, 1, "IPV6_V6ONLY") }
            try? Sys.setInt(fd, SOL_SOCKET, SO_RCVBUF, 1 << 20, "SO_RCVBUF")
            try Sys.bind(fd, addr)
            bound = try Sys.localAddress(fd)
        } catch {
            if fd >= 0 { Sys.close(fd) }
            throw RPCError(.unavailable, "cannot bind UDP \(Endpoint(host: host, port: port)) for SWIM: \(error); the UDP port must be free next to the TCP listener (SPEC §5.10): pick another port")
        }
        descriptor = Descriptor(fd)
        family = addr.family
        self.port = bound.hostAndPort.port
        self.maxDatagram = maxDatagram
        self.queue = queue
        self.onDatagram = onDatagram
    }

    /// Starts reading.
    public func start() {
        queue.async { [self] in
            guard !closed else { return }
            let s = DispatchSource.makeReadSource(fileDescriptor: descriptor.raw, queue: queue)
            s.setEventHandler { [unowned self] in self.readAll() }
            let d = descriptor
            d.sourceAttached()
            s.setCancelHandler { d.sourceCancelled() }
            source = s
            s.resume()
        }
    }

    private func readAll() {
        dispatchPrecondition(condition: .onQueue(queue))
        var buf = [UInt8](repeating: 0, count: maxDatagram + 1)
        for _ in 0..<256 {
            var from = SocketAddress()
            from.length = socklen_t(MemoryLayout<sockaddr_storage>.size)
            let fd = descriptor.raw
            let r: IOResult<Int>
            do {
                r = try Sys.call("recvfrom") {
                    buf.withUnsafeMutableBytes { b in
                        withUnsafeMutablePointer(to: &from.storage) { sp in
                            sp.withMemoryRebound(to: sockaddr.self, capacity: 1) { recvfrom(fd, b.baseAddress, b.count, 0, $0, &from.length) }
                        }
                    }
                }
            } catch {
                return   // ECONNREFUSED from an earlier send (ICMP) and the like: nothing to read now
            }
            guard case .done(let n) = r else { return }
            if n > maxDatagram {
                truncated.add(1, ordering: .relaxed)
                continue
            }
            received.add(1, ordering: .relaxed)
            onDatagram(Array(buf[0..<n]), DatagramAddress(address: from))
        }
    }

    /// Sends one datagram without blocking; a full socket buffer or an error drops it (counted).
    /// Call it on `queue`.
    public func send(_ bytes: [UInt8], to: DatagramAddress) {
        dispatchPrecondition(condition: .onQueue(queue))
        var a = to.address
        guard !closed, Int32(a.storage.ss_family) == family else {
            sendDropped.add(1, ordering: .relaxed)
            return
        }
        let fd = descriptor.raw
        let r = try? Sys.call("sendto") {
            bytes.withUnsafeBytes { b in
                withUnsafePointer(to: &a.storage) { sp in
                    sp.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(fd, b.baseAddress, b.count, Sys.sendFlags | Int32(MSG_DONTWAIT), $0, a.length) }
                }
            }
        }
        if case .done? = r { sent.add(1, ordering: .relaxed) } else { sendDropped.add(1, ordering: .relaxed) }
    }

    /// Stops reading and closes the socket (after the read source's cancel handler).
    public func close() {
        queue.async { [self] in
            guard !closed else { return }
            closed = true
            source?.cancel()
            descriptor.close()
        }
    }
}
