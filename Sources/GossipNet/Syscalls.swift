// The one file in GossipNet that calls the C library for sockets. Every wrapper reads errno
// at once, retries EINTR, and reports EAGAIN/EWOULDBLOCK as `.wouldBlock` instead of an
// error. Glibc/Darwin differences (SOCK_NONBLOCK, accept4, MSG_NOSIGNAL) are handled here.
#if canImport(Glibc)
@preconcurrency import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The outcome of a non-blocking call: finished with a value, or it would block.
enum IOResult<T> {
    case done(T)
    case wouldBlock
}

/// A failed syscall: which call, and its errno.
public struct SyscallError: Error, Sendable, CustomStringConvertible {
    /// The call that failed (`connect`, `sendmsg`, ...).
    public let call: String
    /// The errno it set.
    public let errno: Int32

    public var description: String { "\(call) failed: \(Sys.errorText(errno)) (errno \(errno))" }
}

/// Ignores SIGPIPE process-wide; call once at the start of an executable.
///
/// Sends already use MSG_NOSIGNAL (Linux) or SO_NOSIGPIPE (Darwin); this covers any other
/// write to a closed socket or pipe.
public func ignoreSIGPIPE() {
    _ = signal(SIGPIPE, SIG_IGN)
}

/// A socket address (IPv4 or IPv6) as the kernel takes it.
struct SocketAddress: Sendable {
    var storage = sockaddr_storage()
    var length: socklen_t = 0

    var family: Int32 { Int32(storage.ss_family) }

    /// Numeric host and port ("127.0.0.1", 9000).
    var hostAndPort: (host: String, port: UInt16) {
        var s = storage
        var host = [CChar](repeating: 0, count: Int(NI_MAXHOST))
        var serv = [CChar](repeating: 0, count: Int(NI_MAXSERV))
        let rc = withUnsafePointer(to: &s) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                getnameinfo(sa, length, &host, socklen_t(host.count), &serv, socklen_t(serv.count),
                            NI_NUMERICHOST | NI_NUMERICSERV)
            }
        }
        guard rc == 0 else { return ("?", 0) }
        let h = host.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        let p = serv.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        return (h, UInt16(p) ?? 0)
    }

    /// "127.0.0.1:9000" or "[::1]:9000".
    var description: String {
        let (h, p) = hostAndPort
        return Endpoint(host: h, port: p).description
    }
}

/// Thin, errno-safe wrappers over the socket syscalls.
enum Sys {
    static let iovMax = 1024

    static func errorText(_ e: Int32) -> String { String(cString: strerror(e)) }

    /// Runs `body` until it does not fail with EINTR; maps EAGAIN to `.wouldBlock`.
    @inline(__always)
    static func call<T: BinaryInteger>(_ name: String, _ body: () -> T) throws(SyscallError) -> IOResult<T> {
        while true {
            let r = body()
            if r >= 0 { return .done(r) }
            let e = errno
            if e == EINTR { continue }
            if e == EAGAIN || e == EWOULDBLOCK { return .wouldBlock }
            throw SyscallError(call: name, errno: e)
        }
    }

    /// Like `call` but for calls that never legitimately block.
    static func must<T: BinaryInteger>(_ name: String, _ body: () -> T) throws(SyscallError) -> T {
        switch try call(name, body) {
        case .done(let v): return v
        case .wouldBlock: throw SyscallError(call: name, errno: EAGAIN)
        }
    }

    #if canImport(Glibc)
    static let streamType = Int32(SOCK_STREAM.rawValue)
    static let sendFlags = Int32(MSG_NOSIGNAL)
    #else
    static let streamType = SOCK_STREAM
    static let sendFlags: Int32 = 0
    #endif

    /// A new non-blocking, close-on-exec TCP socket of `family`.
    static func socket(family: Int32) throws(SyscallError) -> Int32 {
        #if canImport(Glibc)
        let type = streamType | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue)
        return try must("socket") { Glibc.socket(family, type, 0) }
        #else
        let fd = try must("socket") { Darwin.socket(family, streamType, 0) }
        try makeNonBlockingCloexec(fd)
        return fd
        #endif
    }

    #if !canImport(Glibc)
    static func makeNonBlockingCloexec(_ fd: Int32) throws(SyscallError) {
        let fl = try must("fcntl") { fcntl(fd, F_GETFL) }
        _ = try must("fcntl") { fcntl(fd, F_SETFL, fl | O_NONBLOCK) }
        _ = try must("fcntl") { fcntl(fd, F_SETFD, FD_CLOEXEC) }
        var one: Int32 = 1
        _ = setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, &one, socklen_t(MemoryLayout<Int32>.size))
    }
    #endif

    static func setInt(_ fd: Int32, _ level: Int32, _ name: Int32, _ value: Int32, _ what: String) throws(SyscallError) {
        var v = value
        _ = try must("setsockopt(\(what))") { setsockopt(fd, level, name, &v, socklen_t(MemoryLayout<Int32>.size)) }
    }

    /// TCP_NODELAY, large buffers; failures of the buffer sizes are ignored (kernel caps).
    static func tuneStream(_ fd: Int32, bufferBytes: Int32 = 4 << 20) {
        try? setInt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, 1, "TCP_NODELAY")
        try? setInt(fd, SOL_SOCKET, SO_SNDBUF, bufferBytes, "SO_SNDBUF")
        try? setInt(fd, SOL_SOCKET, SO_RCVBUF, bufferBytes, "SO_RCVBUF")
    }

    static func bind(_ fd: Int32, _ addr: SocketAddress) throws(SyscallError) {
        var a = addr
        _ = try must("bind") {
            withUnsafePointer(to: &a.storage) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc_bind(fd, $0, a.length) } }
        }
    }

    static func listen(_ fd: Int32, backlog: Int32) throws(SyscallError) {
        _ = try must("listen") { Glibc_listen(fd, backlog) }
    }

    /// Accepts one connection (non-blocking, close-on-exec), with the peer's address.
    static func accept(_ fd: Int32) throws(SyscallError) -> IOResult<(Int32, SocketAddress)> {
        var addr = SocketAddress()
        addr.length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let r = try call("accept") { () -> Int32 in
            withUnsafeMutablePointer(to: &addr.storage) { p in
                p.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                    #if canImport(Glibc)
                    c_accept4(fd, sa, &addr.length, Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue))
                    #else
                    Darwin.accept(fd, sa, &addr.length)
                    #endif
                }
            }
        }
        switch r {
        case .wouldBlock: return .wouldBlock
        case .done(let c):
            #if !canImport(Glibc)
            do { try makeNonBlockingCloexec(c) } catch { close(c); throw error }
            #endif
            return .done((c, addr))
        }
    }

    /// Starts a non-blocking connect: true when already connected, false when in progress.
    static func connect(_ fd: Int32, _ addr: SocketAddress) throws(SyscallError) -> Bool {
        var a = addr
        while true {
            let r = withUnsafePointer(to: &a.storage) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc_connect(fd, $0, a.length) } }
            if r == 0 { return true }
            let e = errno
            if e == EINTR { continue }
            if e == EINPROGRESS || e == EAGAIN { return false }
            throw SyscallError(call: "connect", errno: e)
        }
    }

    /// The pending error of a socket (SO_ERROR), 0 when none.
    static func socketError(_ fd: Int32) -> Int32 {
        var v: Int32 = 0
        var len = socklen_t(MemoryLayout<Int32>.size)
        if getsockopt(fd, SOL_SOCKET, SO_ERROR, &v, &len) != 0 { return errno }
        return v
    }

    static func localAddress(_ fd: Int32) throws(SyscallError) -> SocketAddress {
        var addr = SocketAddress()
        addr.length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        _ = try must("getsockname") {
            withUnsafeMutablePointer(to: &addr.storage) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &addr.length) } }
        }
        return addr
    }

    static func peerAddress(_ fd: Int32) -> SocketAddress? {
        var addr = SocketAddress()
        addr.length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let r = withUnsafeMutablePointer(to: &addr.storage) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getpeername(fd, $0, &addr.length) } }
        return r == 0 ? addr : nil
    }

    /// Gather-writes `count` iovecs.
    @inline(__always)
    static func sendmsg(_ fd: Int32, _ iov: UnsafeMutablePointer<iovec>, _ count: Int) throws(SyscallError) -> IOResult<Int> {
        var msg = msghdr()
        msg.msg_iov = iov
        #if canImport(Glibc)
        msg.msg_iovlen = count
        #else
        msg.msg_iovlen = Int32(count)
        #endif
        return try call("sendmsg") { Glibc_sendmsg(fd, &msg, sendFlags) }
    }

    /// Writes a buffer (one try; may be partial).
    static func send(_ fd: Int32, _ buf: UnsafeRawBufferPointer) throws(SyscallError) -> IOResult<Int> {
        try call("send") { Glibc_send(fd, buf.baseAddress, buf.count, sendFlags) }
    }

    /// Reads into `buf`; `.done(0)` is end of stream.
    @inline(__always)
    static func recv(_ fd: Int32, _ buf: UnsafeMutableRawBufferPointer) throws(SyscallError) -> IOResult<Int> {
        try call("recv") { Glibc_recv(fd, buf.baseAddress, buf.count, 0) }
    }

    /// Closes `fd`; EINTR is not retried (the descriptor is gone on Linux either way).
    static func close(_ fd: Int32) {
        _ = Glibc_close(fd)
    }

    static func shutdownWrite(_ fd: Int32) {
        _ = Glibc_shutdown(fd, Int32(SHUT_WR))
    }

    /// A connected pair of non-blocking, close-on-exec stream sockets (AF_UNIX).
    static func socketpair() throws(SyscallError) -> (Int32, Int32) {
        var fds: [Int32] = [-1, -1]
        #if canImport(Glibc)
        let type = streamType | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue)
        _ = try must("socketpair") { Glibc.socketpair(AF_UNIX, type, 0, &fds) }
        #else
        _ = try must("socketpair") { Darwin.socketpair(AF_UNIX, streamType, 0, &fds) }
        try makeNonBlockingCloexec(fds[0]); try makeNonBlockingCloexec(fds[1])
        #endif
        try? setInt(fds[0], SOL_SOCKET, SO_SNDBUF, 4 << 20, "SO_SNDBUF")
        try? setInt(fds[1], SOL_SOCKET, SO_SNDBUF, 4 << 20, "SO_SNDBUF")
        return (fds[0], fds[1])
    }

    /// Resolves host and port to addresses (numeric hosts without DNS), IPv4 first.
    static func resolve(host: String, port: UInt16, passive: Bool = false) throws(RPCError) -> [SocketAddress] {
        var hints = addrinfo()
        hints.ai_socktype = streamType
        hints.ai_flags = passive ? AI_PASSIVE : 0
        var list: UnsafeMutablePointer<addrinfo>?
        var rc = getaddrinfo(host, String(port), &hints, &list)
        if rc == EAI_SYSTEM && errno == EINTR { rc = getaddrinfo(host, String(port), &hints, &list) }
        guard rc == 0, let first = list else {
            let why = rc == EAI_SYSTEM ? errorText(errno) : String(cString: gai_strerror(rc))
            throw RPCError(.unavailable, "cannot resolve host '\(host)': \(why); check the name or use a numeric address")
        }
        defer { freeaddrinfo(first) }
        var out: [SocketAddress] = []
        var p: UnsafeMutablePointer<addrinfo>? = first
        while let ai = p {
            if ai.pointee.ai_family == AF_INET || ai.pointee.ai_family == AF_INET6, let sa = ai.pointee.ai_addr {
                var a = SocketAddress()
                a.length = ai.pointee.ai_addrlen
                withUnsafeMutableBytes(of: &a.storage) { dst in
                    dst.copyMemory(from: UnsafeRawBufferPointer(start: sa, count: Int(ai.pointee.ai_addrlen)))
                }
                out.append(a)
            }
            p = ai.pointee.ai_next
        }
        out.sort { ($0.family == AF_INET ? 0 : 1) < ($1.family == AF_INET ? 0 : 1) }
        return out
    }

    /// Whether `host` is a numeric IPv4 or IPv6 address (resolving it needs no DNS).
    static func isNumericHost(_ host: String) -> Bool {
        var v4 = in_addr()
        var v6 = in6_addr()
        return inet_pton(AF_INET, host, &v4) == 1 || inet_pton(AF_INET6, host, &v6) == 1
    }

    /// Runs `body` on a new detached thread (not one of Dispatch's): for calls that may block
    /// without bound, such as a resolver that never answers.
    static func detachThread(_ body: @escaping @Sendable () -> Void) {
        final class Box { let body: @Sendable () -> Void; init(_ b: @escaping @Sendable () -> Void) { body = b } }
        let arg = Unmanaged.passRetained(Box(body)).toOpaque()
        var tid = pthread_t()
        let rc = pthread_create(&tid, nil, { raw in
            let box = Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue()
            box.body()
            return nil
        }, arg)
        if rc == 0 {
            pthread_detach(tid)
        } else {
            // No thread to be had: run it here rather than lose it.
            Unmanaged<Box>.fromOpaque(arg).takeRetainedValue().body()
        }
    }

    /// Counts open descriptors of this process (Linux: entries of /proc/self/fd).
    static func openDescriptorCount() -> Int? {
        guard let dir = opendir("/proc/self/fd") else { return nil }
        defer { closedir(dir) }
        var n = 0
        while let e = readdir(dir) {
            let name = withUnsafeBytes(of: e.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
            if name != "." && name != ".." { n += 1 }
        }
        return n - 1   // the directory stream's own descriptor
    }

    // MARK: key log and Unix-domain sockets (SPEC §13.7, §13.8)

    /// Opens `path` for appending (created with mode 0600). Refuses what is not a regular
    /// file and a file that group or others may access.
    static func openKeyLog(_ path: String) throws -> Int32 {
        let fd = try must("open") { Glibc_open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o600) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { let e = errno; close(fd); throw SyscallError(call: "fstat", errno: e) }
        if (st.st_mode & S_IFMT) != S_IFREG {
            close(fd)
            throw RPCError(.invalidArgument, "key log \(path) is not a regular file; give a file path")
        }
        if st.st_mode & 0o077 != 0 {
            close(fd)
            throw RPCError(.invalidArgument, "key log \(path) has mode \(String(st.st_mode & 0o777, radix: 8)), readable by others, and will hold session keys: run `chmod 600 \(path)` or pick a new file")
        }
        return fd
    }

    /// Writes all of `buf` (blocking file descriptors); stops at the first error.
    static func writeAll(_ fd: Int32, _ buf: UnsafeRawBufferPointer) {
        var off = 0
        while off < buf.count {
            let r = Glibc_write(fd, buf.baseAddress! + off, buf.count - off)
            if r > 0 { off += r } else if r < 0 && errno == EINTR { continue } else { return }
        }
    }

    /// A `sockaddr_un` for `path`.
    /// - Throws: `RPCError(.invalidArgument)` when the path does not fit (107 bytes on Linux).
    static func unixAddress(_ path: String) throws(RPCError) -> SocketAddress {
        var addr = SocketAddress()
        var un = sockaddr_un()
        un.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        let capacity = MemoryLayout.size(ofValue: un.sun_path)
        guard !bytes.isEmpty, bytes.count < capacity, !bytes.contains(0) else {
            throw RPCError(.invalidArgument, "control socket path '\(path)' is empty or longer than \(capacity - 1) bytes; use a shorter path")
        }
        withUnsafeMutableBytes(of: &un.sun_path) { p in
            for (i, b) in bytes.enumerated() { p[i] = b }
            p[bytes.count] = 0
        }
        withUnsafeMutableBytes(of: &addr.storage) { dst in
            withUnsafeBytes(of: un) { src in dst.copyMemory(from: src) }
        }
        addr.length = socklen_t(MemoryLayout<sockaddr_un>.size)
        return addr
    }

    /// Whether `fd` is connected to a named Unix-domain socket (a path), as a control-socket
    /// client is; false for TCP and for socket pairs (unnamed).
    static func isNamedUnixPeer(_ fd: Int32) -> Bool {
        guard let a = peerAddress(fd), a.family == AF_UNIX else { return false }
        let pathOffset = MemoryLayout<sockaddr_un>.offset(of: \sockaddr_un.sun_path) ?? 2
        guard Int(a.length) > pathOffset else { return false }
        return withUnsafeBytes(of: a.storage) { $0[pathOffset] != 0 }
    }

    /// A new non-blocking, close-on-exec Unix-domain stream socket.
    static func unixSocket() throws(SyscallError) -> Int32 {
        try socket(family: AF_UNIX)
    }

    /// What is at `path`: nil when nothing, else whether it is a socket.
    static func pathIsSocket(_ path: String) -> Bool? {
        var st = stat()
        guard lstat(path, &st) == 0 else { return nil }
        return (st.st_mode & S_IFMT) == S_IFSOCK
    }

    static func unlink(_ path: String) throws(SyscallError) {
        _ = try must("unlink") { Glibc_unlink(path) }
    }

    static func chmod(_ path: String, _ mode: mode_t) throws(SyscallError) {
        _ = try must("chmod") { Glibc_chmod(path, mode) }
    }

    /// The permission bits of `path` (tests, diagnostics).
    static func mode(_ path: String) -> mode_t? {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        return st.st_mode & 0o7777
    }

    /// Connects a blocking-mode attempt on a non-blocking Unix socket: Unix-domain connects
    /// complete at once or fail (ECONNREFUSED: no listener; EAGAIN: backlog full).
    static func connectUnix(_ fd: Int32, _ addr: SocketAddress) throws(SyscallError) {
        var a = addr
        while true {
            let r = withUnsafePointer(to: &a.storage) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc_connect(fd, $0, a.length) } }
            if r == 0 { return }
            let e = errno
            if e == EINTR { continue }
            throw SyscallError(call: "connect", errno: e)
        }
    }
}

#if canImport(Glibc)
// Glibc's module map hides accept4 (a _GNU_SOURCE function); bind it by its symbol.
@_silgen_name("accept4")
private func c_accept4(_ fd: Int32, _ addr: UnsafeMutablePointer<sockaddr>?, _ len: UnsafeMutablePointer<socklen_t>?, _ flags: Int32) -> Int32
#endif

// Unqualified aliases so the wrappers above read the same on both platforms.
#if canImport(Glibc)
@inline(__always) private func Glibc_bind(_ fd: Int32, _ a: UnsafePointer<sockaddr>, _ l: socklen_t) -> Int32 { Glibc.bind(fd, a, l) }
@inline(__always) private func Glibc_listen(_ fd: Int32, _ b: Int32) -> Int32 { Glibc.listen(fd, b) }
@inline(__always) private func Glibc_connect(_ fd: Int32, _ a: UnsafePointer<sockaddr>, _ l: socklen_t) -> Int32 { Glibc.connect(fd, a, l) }
@inline(__always) private func Glibc_sendmsg(_ fd: Int32, _ m: UnsafePointer<msghdr>, _ f: Int32) -> Int { Glibc.sendmsg(fd, m, f) }
@inline(__always) private func Glibc_send(_ fd: Int32, _ b: UnsafeRawPointer?, _ n: Int, _ f: Int32) -> Int { Glibc.send(fd, b, n, f) }
@inline(__always) private func Glibc_recv(_ fd: Int32, _ b: UnsafeMutableRawPointer?, _ n: Int, _ f: Int32) -> Int { Glibc.recv(fd, b, n, f) }
@inline(__always) private func Glibc_close(_ fd: Int32) -> Int32 { Glibc.close(fd) }
@inline(__always) private func Glibc_write(_ fd: Int32, _ b: UnsafeRawPointer, _ n: Int) -> Int { Glibc.write(fd, b, n) }
@inline(__always) private func Glibc_unlink(_ p: String) -> Int32 { Glibc.unlink(p) }
@inline(__always) private func Glibc_chmod(_ p: String, _ m: mode_t) -> Int32 { Glibc.chmod(p, m) }
@inline(__always) private func Glibc_open(_ p: String, _ flags: Int32, _ mode: mode_t) -> Int32 { Glibc.open(p, flags, mode) }
@inline(__always) private func Glibc_shutdown(_ fd: Int32, _ how: Int32) -> Int32 { Glibc.shutdown(fd, how) }
#else
@inline(__always) private func Glibc_bind(_ fd: Int32, _ a: UnsafePointer<sockaddr>, _ l: socklen_t) -> Int32 { Darwin.bind(fd, a, l) }
@inline(__always) private func Glibc_listen(_ fd: Int32, _ b: Int32) -> Int32 { Darwin.listen(fd, b) }
@inline(__always) private func Glibc_connect(_ fd: Int32, _ a: UnsafePointer<sockaddr>, _ l: socklen_t) -> Int32 { Darwin.connect(fd, a, l) }
@inline(__always) private func Glibc_sendmsg(_ fd: Int32, _ m: UnsafePointer<msghdr>, _ f: Int32) -> Int { Darwin.sendmsg(fd, m, f) }
@inline(__always) private func Glibc_send(_ fd: Int32, _ b: UnsafeRawPointer?, _ n: Int, _ f: Int32) -> Int { Darwin.send(fd, b, n, f) }
@inline(__always) private func Glibc_recv(_ fd: Int32, _ b: UnsafeMutableRawPointer?, _ n: Int, _ f: Int32) -> Int { Darwin.recv(fd, b, n, f) }
@inline(__always) private func Glibc_close(_ fd: Int32) -> Int32 { Darwin.close(fd) }
@inline(__always) private func Glibc_write(_ fd: Int32, _ b: UnsafeRawPointer, _ n: Int) -> Int { Darwin.write(fd, b, n) }
@inline(__always) private func Glibc_unlink(_ p: String) -> Int32 { Darwin.unlink(p) }
@inline(__always) private func Glibc_chmod(_ p: String, _ m: mode_t) -> Int32 { Darwin.chmod(p, m) }
@inline(__always) private func Glibc_open(_ p: String, _ flags: Int32, _ mode: mode_t) -> Int32 { Darwin.open(p, flags, mode) }
@inline(__always) private func Glibc_shutdown(_ fd: Int32, _ how: Int32) -> Int32 { Darwin.shutdown(fd, how) }
#endif

// MARK: - UDP and IPv4 multicast (LAN discovery, Multicast.swift)

extension Sys {
    #if canImport(Glibc)
    static let datagramType = Int32(SOCK_DGRAM.rawValue)
    #else
    static let datagramType = SOCK_DGRAM
    #endif

    /// A new non-blocking, close-on-exec UDP socket (IPv4).
    static func udpSocket() throws(SyscallError) -> Int32 {
        #if canImport(Glibc)
        let type = datagramType | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue)
        return try must("socket(udp)") { Glibc.socket(AF_INET, type, 0) }
        #else
        let fd = try must("socket(udp)") { Darwin.socket(AF_INET, datagramType, 0) }
        try makeNonBlockingCloexec(fd)
        return fd
        #endif
    }

    /// An IPv4 address from numeric text ("239.255.71.71"); nil when it is not one.
    static func ipv4(_ text: String) -> in_addr? {
        var a = in_addr()
        return inet_pton(AF_INET, text, &a) == 1 ? a : nil
    }

    /// A sockaddr_in for `addr:port`.
    static func socketAddress(_ addr: in_addr, port: UInt16) -> SocketAddress {
        var sin = sockaddr_in()
        sin.sin_family = sa_family_t(AF_INET)
        sin.sin_port = port.bigEndian
        sin.sin_addr = addr
        var a = SocketAddress()
        a.length = socklen_t(MemoryLayout<sockaddr_in>.size)
        withUnsafeMutableBytes(of: &a.storage) { dst in
            withUnsafeBytes(of: &sin) { dst.copyMemory(from: $0) }
        }
        return a
    }

    /// Joins `group` on the interface whose address is `interface` (INADDR_ANY: the kernel's
    /// choice) and sends multicast through that interface, with `ttl` and loopback on.
    static func joinMulticast(_ fd: Int32, group: in_addr, interface: in_addr, ttl: Int32, loop: Bool) throws(SyscallError) {
        var mreq = ip_mreq(imr_multiaddr: group, imr_interface: interface)
        _ = try must("setsockopt(IP_ADD_MEMBERSHIP)") {
            setsockopt(fd, Int32(IPPROTO_IP), IP_ADD_MEMBERSHIP, &mreq, socklen_t(MemoryLayout<ip_mreq>.size))
        }
        var ifaddr = interface
        _ = try must("setsockopt(IP_MULTICAST_IF)") {
            setsockopt(fd, Int32(IPPROTO_IP), IP_MULTICAST_IF, &ifaddr, socklen_t(MemoryLayout<in_addr>.size))
        }
        try setInt(fd, Int32(IPPROTO_IP), IP_MULTICAST_TTL, ttl, "IP_MULTICAST_TTL")
        try setInt(fd, Int32(IPPROTO_IP), IP_MULTICAST_LOOP, loop ? 1 : 0, "IP_MULTICAST_LOOP")
    }

    /// Receives one datagram into `buf`. Returns its full length (larger than `buf.count` when
    /// it was truncated: Linux's MSG_TRUNC) and the sender's address.
    static func recvfrom(_ fd: Int32, _ buf: UnsafeMutableRawBufferPointer) throws(SyscallError) -> IOResult<(Int, SocketAddress)> {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        #if canImport(Glibc)
        let flags = Int32(MSG_TRUNC)
        #else
        let flags: Int32 = 0
        #endif
        let r = try call("recvfrom") {
            withUnsafeMutablePointer(to: &storage) { p in
                p.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                    Glibc_recvfrom(fd, buf.baseAddress, buf.count, flags, sa, &length)
                }
            }
        }
        switch r {
        case .wouldBlock: return .wouldBlock
        case .done(let n): return .done((n, SocketAddress(storage: storage, length: length)))
        }
    }

    /// Sends one datagram to `to`; `.wouldBlock` when the socket buffer is full (the caller
    /// drops it: announcements are periodic).
    static func sendto(_ fd: Int32, _ buf: UnsafeRawBufferPointer, _ to: SocketAddress) throws(SyscallError) -> IOResult<Int> {
        var storage = to.storage
        let length = to.length
        return try call("sendto") {
            withUnsafePointer(to: &storage) { p in
                p.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                    Glibc_sendto(fd, buf.baseAddress, buf.count, sendFlags, sa, length)
                }
            }
        }
    }
}

#if canImport(Glibc)
@inline(__always) private func Glibc_recvfrom(_ fd: Int32, _ b: UnsafeMutableRawPointer?, _ n: Int, _ f: Int32,
                                              _ a: UnsafeMutablePointer<sockaddr>, _ l: UnsafeMutablePointer<socklen_t>) -> Int { Glibc.recvfrom(fd, b, n, f, a, l) }
@inline(__always) private func Glibc_sendto(_ fd: Int32, _ b: UnsafeRawPointer?, _ n: Int, _ f: Int32,
                                            _ a: UnsafePointer<sockaddr>, _ l: socklen_t) -> Int { Glibc.sendto(fd, b, n, f, a, l) }
#else
@inline(__always) private func Glibc_recvfrom(_ fd: Int32, _ b: UnsafeMutableRawPointer?, _ n: Int, _ f: Int32,
                                              _ a: UnsafeMutablePointer<sockaddr>, _ l: UnsafeMutablePointer<socklen_t>) -> Int { Darwin.recvfrom(fd, b, n, f, a, l) }
@inline(__always) private func Glibc_sendto(_ fd: Int32, _ b: UnsafeRawPointer?, _ n: Int, _ f: Int32,
                                            _ a: UnsafePointer<sockaddr>, _ l: socklen_t) -> Int { Darwin.sendto(fd, b, n, f, a, l) }
#endif
