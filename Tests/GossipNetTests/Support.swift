// Test support: transports (socket pair, 127.0.0.1, ::1), a client/server harness, condition
// waits with deadlines, and raw socket helpers for misbehaving peers.
import Foundation
import Testing
import GossipWire
@testable import GossipNet
#if canImport(Glibc)
import Glibc
#endif

enum Transport: String, CaseIterable, CustomTestStringConvertible, Sendable {
    case socketpair, ipv4, ipv6
    var testDescription: String { rawValue }
    /// The transports every machine has; IPv6 runs in `IPv6Tests`, skipped where it is missing.
    static let local: [Transport] = [.socketpair, .ipv4]
}

/// Whether ::1 can be bound here (some containers lack IPv6 loopback).
let ipv6Available: Bool = {
    guard let fd = try? Sys.socket(family: AF_INET6) else { return false }
    defer { Sys.close(fd) }
    guard let addrs = try? Sys.resolve(host: "::1", port: 0), let a = addrs.first else { return false }
    return (try? Sys.bind(fd, a)) != nil
}()

struct Harness {
    let server: RPCServer
    let client: RPCClient
    let endpoint: Endpoint

    /// A server with `setup` applied and a client connected to it over `transport`; nil when
    /// the transport is unavailable (IPv6 missing).
    static func make(_ transport: Transport, config: ServerConfig = .init(), clientLimits: Limits = .default,
                     maxQueuedBytes: Int = 64 << 20, setup: (RPCServer) -> Void) throws -> Harness? {
        let server = RPCServer(config: config)
        setup(server)
        let client = RPCClient(limits: clientLimits, connectTimeout: .seconds(5), maxQueuedBytes: maxQueuedBytes)
        let endpoint: Endpoint
        switch transport {
        case .socketpair:
            let (a, b) = try Sys.socketpair()
            server.adopt(socket: a)
            endpoint = Endpoint(host: "socketpair", port: 1)
            client.adopt(socket: b, as: endpoint)
        case .ipv4:
            endpoint = try server.start(host: "127.0.0.1", port: 0)
        case .ipv6:
            guard ipv6Available else {
                throw RPCError(.unavailable, "::1 cannot be bound here; IPv6 tests belong in IPv6Tests, which is skipped then")
            }
            endpoint = try server.start(host: "::1", port: 0)
        }
        return Harness(server: server, client: client, endpoint: endpoint)
    }

    /// Closes the client and shuts the server down, waiting for the end.
    func stop() async {
        client.close()
        let done = Flag()
        server.shutdown(grace: .seconds(2)) { done.set() }
        await waitFor("server shutdown to complete", timeout: .seconds(10)) { done.isSet }
    }
}

/// A thread-safe flag/counter/box for test callbacks.
final class Flag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = 0
    func set() { lock.withLock { value += 1 } }
    var isSet: Bool { lock.withLock { value > 0 } }
    var count: Int { lock.withLock { value } }
}

final class Box<T>: @unchecked Sendable {
    private let lock = NSLock()
    private var items: [T] = []
    func append(_ t: T) { lock.withLock { items.append(t) } }
    var all: [T] { lock.withLock { items } }
    var count: Int { lock.withLock { items.count } }
}

/// Polls `condition` until true or `timeout`; records an issue naming `what` on timeout.
@discardableResult
func waitFor(_ what: String, timeout: Duration = .seconds(20), _ condition: () -> Bool) async -> Bool {
    let start = ContinuousClock.now
    while !condition() {
        if ContinuousClock.now - start > timeout {
            Issue.record("timed out after \(timeout) waiting for \(what)")
            return false
        }
        try? await Task.sleep(for: .milliseconds(2))
    }
    return true
}

func bytes(_ s: String) -> ByteSlice { ByteSlice(ByteStorage(copying: Array(s.utf8))) }
func pattern(_ n: Int, seed: UInt8 = 7) -> ByteSlice {
    let s = ByteStorage(count: n)
    let p = s.mutableBytes
    for i in 0..<n { p[i] = UInt8(truncatingIfNeeded: i &* 31 &+ Int(seed)) }
    return ByteSlice(s)
}
func text(_ m: InboundMessage) -> String { String(decoding: m.payload.bytes, as: UTF8.self) }

/// Echo handler: replies with the request payload.
let echo: RPCHandler = { m, r in r.reply(m.payload, options: .init(checksum: true)) }

/// Waits until `fd` is readable (or hung up) within `timeout`.
func pollReadable(_ fd: Int32, timeout: Duration) -> Bool {
    var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
    let ms = Int32(timeout.components.seconds * 1000 + timeout.components.attoseconds / 1_000_000_000_000_000)
    return poll(&p, 1, ms) > 0
}

/// Reads from a non-blocking fd until end of stream (or error) within `timeout`.
func readToEnd(_ fd: Int32, timeout: Duration) -> (bytes: [UInt8], sawEnd: Bool) {
    var out: [UInt8] = []
    let start = ContinuousClock.now
    var buf = [UInt8](repeating: 0, count: 65536)
    while ContinuousClock.now - start < timeout {
        guard pollReadable(fd, timeout: .milliseconds(200)) else { continue }
        let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        if n > 0 { out += buf[0..<n]; continue }
        if n == 0 { return (out, true) }
        if errno == EAGAIN || errno == EINTR { continue }
        return (out, true)   // ECONNRESET etc.: the peer is gone
    }
    return (out, false)
}

/// Reads and decodes messages from a non-blocking fd until at least one arrived, the stream
/// ended, or `timeout` passed; returns what was decoded.
func readFirstMessages(_ fd: Int32, timeout: Duration) throws -> [InboundMessage] {
    let d = MessageDecoder()
    var got: [InboundMessage] = []
    let start = ContinuousClock.now
    var buf = [UInt8](repeating: 0, count: 4096)
    while got.isEmpty && ContinuousClock.now - start < timeout {
        guard pollReadable(fd, timeout: .milliseconds(200)) else { continue }
        let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        if n <= 0 { break }
        try d.append(Array(buf[0..<n]))
        while let m = d.nextMessage() { got.append(m) }
    }
    return got
}

/// Writes all of `data` to a (non-blocking) fd.
func writeAll(_ fd: Int32, _ data: [UInt8]) {
    var off = 0
    while off < data.count {
        let n = data[off...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        if n > 0 { off += n } else if errno != EAGAIN && errno != EINTR { return } else {
            var p = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
            _ = poll(&p, 1, 100)
        }
    }
}

/// A raw connected TCP socket to `endpoint` (non-blocking).
func rawConnect(_ endpoint: Endpoint) async throws -> Int32 {
    try await withCheckedThrowingContinuation { (c: CheckedContinuation<Int32, Error>) in
        Connector.connect(to: endpoint, timeout: .seconds(5), queue: DispatchQueue(label: "test.connect")) { r in
            switch r {
            case .success(let (fd, _)): c.resume(returning: fd)
            case .failure(let e): c.resume(throwing: e)
            }
        }
    }
}

func openFDCount() -> Int { Sys.openDescriptorCount() ?? -1 }

/// Descriptors of this process that are TCP sockets with local or remote port `port`
/// (read from /proc/net/tcp{,6} and /proc/self/fd). Unlike the process-wide count, other
/// tests running in parallel do not disturb it. nil where /proc is missing.
func openSocketCount(port: UInt16) -> Int? {
    var inodes = Set<String>()
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        guard let text = try? String(contentsOfFile: table, encoding: .utf8) else { continue }
        for line in text.split(separator: "\n").dropFirst() {
            let f = line.split(separator: " ", omittingEmptySubsequences: true)
            guard f.count > 9 else { continue }
            let local = f[1].split(separator: ":").last.flatMap { UInt16($0, radix: 16) }
            let remote = f[2].split(separator: ":").last.flatMap { UInt16($0, radix: 16) }
            if local == port || remote == port { inodes.insert(String(f[9])) }
        }
    }
    guard let names = try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd") else { return nil }
    var n = 0
    for name in names {
        guard let target = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/" + name),
              target.hasPrefix("socket:["), target.hasSuffix("]") else { continue }
        if inodes.contains(String(target.dropFirst(8).dropLast())) { n += 1 }
    }
    return n
}

/// Every whole message in `bytes` (a stream read to its end), in order.
func decodeAll(_ bytes: [UInt8]) throws -> [InboundMessage] {
    let d = MessageDecoder()
    try d.append(bytes)
    var out: [InboundMessage] = []
    while let m = d.nextMessage() { out.append(m) }
    return out
}
