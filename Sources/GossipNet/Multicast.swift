// An IPv4 multicast UDP socket for LAN discovery (SPEC §5.11): joined to one group on one
// interface, receiving every datagram sent to the group's port, sending datagrams to the
// group. Unconnected UDP: a peer's hang-up cannot exist, so a Dispatch read source is safe
// here (unlike connected TCP sockets, see Poller.swift). What the datagrams mean is decided
// elsewhere (GossipNode's Discovery); this file moves bytes and bounds them.
import Dispatch
#if canImport(Glibc)
@preconcurrency import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A UDP socket joined to an IPv4 multicast group. `@unchecked Sendable`: the descriptor and
/// all state are touched only on `queue` (reads, sends and the close).
public final class MulticastSocket: @unchecked Sendable {
    /// The group and port datagrams go to and come from.
    public let group: String
    public let port: UInt16
    private let fd: Int32
    private let groupAddress: SocketAddress
    private let queue: DispatchQueue
    private var source: DispatchSourceRead?
    private let maxDatagramBytes: Int
    private var buffer: UnsafeMutableRawBufferPointer
    private var closed = false

    /// Opens the socket, binds `group:port` (several processes of one host may; SO_REUSEADDR
    /// and SO_REUSEPORT), joins the group on `interface`, and sets the outgoing interface,
    /// `ttl` and loopback (so members on one host hear each other).
    /// - Parameters:
    ///   - interface: the IPv4 address of the interface to join on ("127.0.0.1" for loopback);
    ///     nil or "0.0.0.0": the kernel's choice (the interface of the default route).
    ///   - maxDatagramBytes: larger datagrams are reported with their full length and their
    ///     first `maxDatagramBytes` bytes only (the receiver drops them as oversized).
    /// - Throws: `RPCError(.invalidArgument)` for a group outside 224.0.0.0/4 or a non-IPv4
    ///   interface; `.unavailable` when a socket call fails (the text names it and the errno).
    public init(group: String, port: UInt16, interface: String?, ttl: Int32 = 1, loop: Bool = true,
                maxDatagramBytes: Int = 2048, queue: DispatchQueue) throws(RPCError) {
        guard let g = Sys.ipv4(group), (UInt32(bigEndian: g.s_addr) >> 28) == 0xE else {
            throw RPCError(.invalidArgument, "'\(group)' is not an IPv4 multicast group (224.0.0.0/4; administratively scoped: 239.255.0.0/16)")
        }
        let ifText = interface ?? "0.0.0.0"
        guard let ifaddr = Sys.ipv4(ifText) else {
            throw RPCError(.invalidArgument, "multicast discovery needs an IPv4 interface address, not '\(ifText)'; listen on an IPv4 address (or 0.0.0.0)")
        }
        self.group = group
        self.port = port
        self.queue = queue
        self.maxDatagramBytes = maxDatagramBytes
        self.groupAddress = Sys.socketAddress(g, port: port)
        let fd: Int32
        do { fd = try Sys.udpSocket() } catch { throw RPCError(.unavailable, "cannot open a UDP socket for discovery: \(error)") }
        do {
            try Sys.setInt(fd, SOL_SOCKET, SO_REUSEADDR, 1, "SO_REUSEADDR")
            try Sys.setInt(fd, SOL_SOCKET, SO_REUSEPORT, 1, "SO_REUSEPORT")
            // Bound to the group address: only datagrams sent to the group arrive.
            try Sys.bind(fd, groupAddress)
            try Sys.joinMulticast(fd, group: g, interface: ifaddr, ttl: ttl, loop: loop)
        } catch {
            Sys.close(fd)
            throw RPCError(.unavailable, "cannot join multicast group \(group):\(port) on \(ifText): \(error); check that the interface has multicast (ip link) and a route for 224.0.0.0/4")
        }
        self.fd = fd
        self.buffer = .allocate(byteCount: maxDatagramBytes, alignment: 8)
    }

    deinit { buffer.deallocate() }

    /// Starts reading: `onDatagram(bytes, fullLength, sourceHost)` on `queue` for each datagram
    /// (`bytes` holds at most `maxDatagramBytes`; `fullLength` is what was sent).
    public func start(_ onDatagram: @escaping @Sendable ([UInt8], Int, String) -> Void) {
        queue.async { [self] in
            guard !closed, source == nil else { return }
            let s = DispatchSource.makeReadSource(fileDescriptor: fd, queue: queue)
            s.setEventHandler { [unowned self] in drain(onDatagram) }
            s.setCancelHandler { [fd] in Sys.close(fd) }
            source = s
            s.resume()
        }
    }

    /// Reads every datagram that is waiting (a bounded number per event, so a flood cannot
    /// starve the queue).
    private func drain(_ onDatagram: ([UInt8], Int, String) -> Void) {
        for _ in 0..<64 {
            let r: IOResult<(Int, SocketAddress)>
            do { r = try Sys.recvfrom(fd, buffer) } catch { return }
            guard case .done(let (n, from)) = r else { return }
            let kept = min(n, maxDatagramBytes)
            onDatagram(Array(UnsafeRawBufferPointer(rebasing: buffer[0..<kept])), n, from.hostAndPort.host)
        }
    }

    /// Sends `bytes` to the group (on `queue`); `completion(false)` when the kernel did not
    /// take it at once (it is dropped: announcements are periodic) or the socket is closed.
    public func send(_ bytes: [UInt8], completion: (@Sendable (Bool) -> Void)? = nil) {
        queue.async { [self] in
            guard !closed else { completion?(false); return }
            let r = bytes.withUnsafeBytes { b in try? Sys.sendto(fd, b, groupAddress) }
            if case .done? = r { completion?(true) } else { completion?(false) }
        }
    }

    /// Stops reading and closes the socket (on `queue`); idempotent.
    public func close() {
        queue.async { [self] in
            guard !closed else { return }
            closed = true
            if let s = source { s.cancel() } else { Sys.close(fd) }
            source = nil
        }
    }
}
