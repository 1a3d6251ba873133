// The `net` benchmark suite: a two-way exchange of N float32 through the RPC layer over
// 127.0.0.1 (request of N floats, the handler replies with the same bytes), against the same
// bytes echoed over a plain blocking TCP connection in the same process; and peak RSS of the
// 100M exchange as a multiple of its payload. Bulk payloads go uncompressed without checksums,
// as the node sends them.
//
// Methodology (both sides do the same work, so the ratio is the RPC layer's own cost):
// - Timed: from handing the request to the transport until the whole reply is in memory.
// - The request buffer is built and written before timing on both sides, and released as
//   soon as it was sent on both sides (the RPC transport drops it off its queue once sent;
//   the echo's writer thread frees it after its last send), so the 100M exchange fits the
//   RSS budget the same way a memory-frugal node does.
// - Receive buffers are reused on both sides: the echo reads into buffers it already touched;
//   the RPC receivers (server and client MessageDecoder) reuse the buffer of an earlier
//   message of the same size once the application released it, as a node exchanging
//   same-size models does. The first 100M exchange (fresh buffers, page faults) is one of
//   the 100M samples. `socket_freshbuf` shows what reading into untouched memory costs.
// - Socket options are the transport's (TCP_NODELAY, 4 MiB SO_SNDBUF/SO_RCVBUF) on both sides.
// - RPC and echo samples alternate (ABAB), so load drift on a shared machine hits both alike;
//   each line is the median of its samples.
// - Secure channel (SPEC §13): a second server and client run the Noise channel; with 10M in
//   the sizes, `exchange_10M_secure_ms` alternates with the plaintext RPC exchange (ABAB) and
//   `exchange_10M_secure_vs_plain` is their ratio. `handshake_us` is the median time to
//   open a fresh secure connection and get one Ping answered (TCP connect, the three
//   handshake messages, one sealed round trip); `connect_ping_plain_us` is the same without
//   the channel, for reference.
import Foundation
import GossipNet
import Crypto
import GossipSecure
import GossipWire
#if canImport(Glibc)
import Glibc
#endif

/// - Parameters: sizes: a subset of 1M, 10M, 100M; reps: samples per size (nil: 11, 7, 5).
func runNetSuite(sizes: Set<String>, reps repsOverride: Int?) throws {
    let server = RPCServer()
    server.register(.gossipExchange) { m, r in r.reply(m.payload, options: .init(checksum: false)) }
    let endpoint = try server.start(host: "127.0.0.1", port: 0)
    let client = RPCClient()
    let echo = try EchoServer()
    defer { echo.stop() }

    // Warm up the pooled connection (not timed).
    _ = try exchange(client, endpoint, floats: 1024)

    // 100M first, so the process-wide VmHWM is this exchange's peak.
    let payload100 = 100_000_000 * 4
    let rssBefore = peakRSS()
    let firstMs = sizes.contains("100M") ? try exchange(client, endpoint, floats: 100_000_000) : 0
    let rssPeak = peakRSS()
    let rssRatio = Double(rssPeak - rssBefore) / Double(payload100)

    // The secure twin: same handler, the Noise channel on every connection.
    let network = NetworkKey.generate()
    var secureConfig = ServerConfig()
    secureConfig.security = ChannelSecurity(networkKey: network, identity: IdentityKey.generate())
    let secureServer = RPCServer(config: secureConfig)
    secureServer.register(.gossipExchange) { m, r in r.reply(m.payload, options: .init(checksum: false)) }
    secureServer.register(.ping) { m, r in r.reply(m.payload) }
    server.register(.ping) { m, r in r.reply(m.payload) }
    let secureEndpoint = try secureServer.start(host: "127.0.0.1", port: 0)
    let clientSecurity = ChannelSecurity(networkKey: network, identity: IdentityKey.generate())
    let secureClient = RPCClient(security: clientSecurity)
    defer {
        secureClient.close()
        let done = DispatchSemaphore(value: 0)
        secureServer.shutdown(grace: .seconds(1)) { done.signal() }
        _ = done.wait(timeout: .now() + 5)
    }
    _ = try exchange(secureClient, secureEndpoint, floats: 1024)

    var lines: [String] = []
    var secureLines: [String] = []
    var plainSetup: [Double] = [], secureSetup: [Double] = []
    let setups = repsOverride.map { max(5, $0 * 5) } ?? 41
    for _ in 0..<setups {
        plainSetup.append(try freshPing(security: nil, server, endpoint))
        secureSetup.append(try freshPing(security: clientSecurity, secureServer, secureEndpoint))
    }
    secureLines.append("handshake_us: \(fmt(median(secureSetup)))  (fresh secure connection: connect, 3 handshake messages, one sealed Ping round trip; median of \(setups))")
    secureLines.append("connect_ping_plain_us: \(fmt(median(plainSetup)))  (the same without the channel)")
    if sizes.contains("10M") {
        let reps = repsOverride ?? 7
        var plain: [Double] = [], secure: [Double] = []
        _ = try exchange(secureClient, secureEndpoint, floats: 10_000_000)   // first use of the buffers, not timed
        while secure.count < reps {
            plain.append(try exchange(client, endpoint, floats: 10_000_000))
            secure.append(try exchange(secureClient, secureEndpoint, floats: 10_000_000))
        }
        secureLines.append("exchange_10M_plain_ms: \(fmt(median(plain)))  (plaintext RPC, alternating with the secure one; median of \(reps))")
        secureLines.append("exchange_10M_secure_ms: \(fmt(median(secure)))  (Noise channel, AES-GCM records; median of \(reps))")
        secureLines.append("exchange_10M_secure_vs_plain: \(fmt(median(secure) / median(plain)))")
    }
    for (label, floats, defaultReps) in [("1M", 1_000_000, 11), ("10M", 10_000_000, 7), ("100M", 100_000_000, 5)]
    where sizes.contains(label) {
        let reps = repsOverride ?? defaultReps
        var rpc: [Double] = label == "100M" ? [firstMs] : []
        var base: [Double] = []
        while base.count < reps {
            if rpc.count < reps { rpc.append(try exchange(client, endpoint, floats: floats)) }
            base.append(try echo.exchange(bytes: floats * 4))
        }
        let r = median(rpc), b = median(base)
        lines.append("exchange_\(label)_rpc_ms: \(fmt(r))  (median of \(reps), alternating with the echo)")
        lines.append("exchange_\(label)_socket_ms: \(fmt(b))  (plain blocking TCP echo, same bytes, buffers reused)")
        lines.append("exchange_\(label)_vs_socket: \(fmt(r / b))")
        var fresh: [Double] = []
        for _ in 0..<reps { fresh.append(try echo.exchange(bytes: floats * 4, freshBuffers: true)) }
        lines.append("exchange_\(label)_socket_freshbuf_ms: \(fmt(median(fresh)))  (echo reading into untouched memory)")
    }
    secureLines += cipherLines()
    for l in lines + secureLines { out(l) }
    if sizes.contains("100M") {
        out("exchange_100M_rss_vs_payload: \(fmt(rssRatio))")
        out("exchange_100M_rss_peak_delta_mb: \(fmt(Double(rssPeak - rssBefore) / 1e6))  (VmHWM delta over the 100M exchange, run first; the bench's own request buffer included)")
    }

    client.close()
    let done = DispatchSemaphore(value: 0)
    server.shutdown(grace: .seconds(1)) { done.signal() }
    _ = done.wait(timeout: .now() + 5)
}

/// Single-thread AES-GCM record speed through GossipSecure (65519-byte records into reused
/// buffers, as the record layer seals and opens them), MB/s of plaintext.
private func cipherLines() -> [String] {
    let r = 65_519, count = 600
    var sender = CipherState(cipher: .aesGCM)
    var receiver = CipherState(cipher: .aesGCM)
    let key = SymmetricKey(size: .bits256)
    try! sender.initializeKey(key)
    try! receiver.initializeKey(key)
    let plain = UnsafeMutableRawPointer.allocate(byteCount: r, alignment: 64)
    let sealed = UnsafeMutableRawPointer.allocate(byteCount: count * (r + 16), alignment: 64)
    let opened = UnsafeMutableRawPointer.allocate(byteCount: r, alignment: 64)
    defer { plain.deallocate(); sealed.deallocate(); opened.deallocate() }
    memset(plain, 0x3F, r)
    memset(sealed, 0, count * (r + 16))
    memset(opened, 0, r)
    // A first round warms the allocator and the library up; the second is timed.
    var t0 = ContinuousClock.now, t1 = t0, t2 = t0
    for _ in 0..<2 {
        sender.setNonce(0)
        receiver.setNonce(0)
        t0 = ContinuousClock.now
        for i in 0..<count { try! sender.encrypt(UnsafeRawBufferPointer(start: plain, count: r), into: sealed + i * (r + 16)) }
        t1 = ContinuousClock.now
        for i in 0..<count { try! receiver.decrypt(UnsafeRawBufferPointer(start: sealed + i * (r + 16), count: r + 16), into: opened) }
        t2 = ContinuousClock.now
    }
    let mb = Double(count * r) / 1e6
    return ["record_seal_mb_per_s: \(fmt(mb / (ms(t1 - t0) / 1000)))  (one thread, 65519-byte AES-GCM records into a reused buffer)",
            "record_open_mb_per_s: \(fmt(mb / (ms(t2 - t1) / 1000)))"]
}

/// `secure-echo`: a secure echo server with a random network key; never returns.
func runSecureEcho(readyFile: String) throws -> Never {
    var config = ServerConfig()
    config.security = ChannelSecurity(networkKey: NetworkKey.generate(), identity: IdentityKey.generate())
    config.securityLog = { line in warn(line) }
    let server = RPCServer(config: config)
    server.register(.ping) { m, r in r.reply(m.payload) }
    server.register(.gossipExchange) { m, r in r.reply(m.payload) }
    let endpoint = try server.start(host: "127.0.0.1", port: 0)
    try (endpoint.description + "\n").write(toFile: readyFile, atomically: true, encoding: .utf8)
    while true { sleep(3600) }
}

/// Opens a fresh client (plain or secure), gets one Ping answered, closes; microseconds.
private func freshPing(security: ChannelSecurity?, _ server: RPCServer, _ endpoint: Endpoint) throws -> Double {
    let client = RPCClient(security: security)
    defer { client.close() }
    let done = DispatchSemaphore(value: 0)
    let outcome = Outcome()
    let start = ContinuousClock.now
    client.call(endpoint, type: .ping, payload: ByteSlice(ByteStorage(copying: Array("ping".utf8))), deadline: .seconds(10)) { r in
        outcome.result = r
        done.signal()
    }
    done.wait()
    let us = ms(ContinuousClock.now - start) * 1000
    _ = try outcome.result!.get()
    return us
}

/// One RPC exchange of `floats` float32 each way; milliseconds.
private func exchange(_ client: RPCClient, _ endpoint: Endpoint, floats: Int) throws -> Double {
    let done = DispatchSemaphore(value: 0)
    let outcome = Outcome()
    outcome.request = ByteStorage(count: floats * 4)
    memset(outcome.request!.mutableBytes.baseAddress!, 0x3F, floats * 4)
    let start = ContinuousClock.now
    send(client, endpoint, outcome: outcome, done: done)
    done.wait()
    let ms = ms(ContinuousClock.now - start)
    let reply = try outcome.result!.get()
    guard reply.payload.count == floats * 4 else {
        throw RPCError(.dataLoss, "reply of \(reply.payload.count) bytes, expected \(floats * 4)")
    }
    return ms
}

/// Builds the request in its own scope so the transport holds its only reference and frees
/// it as soon as it is sent.
@inline(never)
private func send(_ client: RPCClient, _ endpoint: Endpoint, outcome: Outcome, done: DispatchSemaphore) {
    let storage = outcome.request!
    outcome.request = nil
    client.call(endpoint, type: .gossipExchange, payload: ByteSlice(storage), options: .init(checksum: false),
                deadline: .seconds(120)) { r in
        outcome.result = r
        done.signal()
    }
}

private final class Outcome: @unchecked Sendable {
    var result: Result<InboundMessage, RPCError>?
    var request: ByteStorage?
}

/// A plain blocking TCP echo on 127.0.0.1: the server thread reads all N bytes, then
/// writes them back; the client's writer thread writes N (then frees that buffer, as the
/// RPC transport does with a sent request) while the calling thread reads N. All threads
/// are started once, like the RPC side's queues.
private final class EchoServer: @unchecked Sendable {
    private let listenFD: Int32
    private var serverFD: Int32 = -1
    private var clientFD: Int32 = -1
    private let request = DispatchSemaphore(value: 0)
    private let served = DispatchSemaphore(value: 0)
    private let writeRequest = DispatchSemaphore(value: 0)
    private let wrote = DispatchSemaphore(value: 0)
    private var size = 0
    private var buffer = UnsafeMutableRawPointer.allocate(byteCount: 1, alignment: 64)
    private var capacity = 0
    private var outgoing: UnsafeMutableRawPointer?
    private var stopping = false

    init() throws {
        listenFD = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = 0
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        try check(withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listenFD, $0, len) } }, "bind")
        try check(listen(listenFD, 4), "listen")
        try check(withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(listenFD, $0, &len) } }, "getsockname")
        clientFD = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        tune(clientFD)
        try check(withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(clientFD, $0, len) } }, "connect")
        serverFD = accept(listenFD, nil, nil)
        try check(serverFD, "accept")
        tune(serverFD)
        Thread { [self] in serve() }.start()
        Thread { [self] in writer() }.start()
    }

    /// As GossipNet's `Sys.tuneStream`.
    private func tune(_ fd: Int32) {
        var one: Int32 = 1, buf: Int32 = 4 << 20
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, 4)
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buf, 4)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buf, 4)
    }

    private func serve() {
        while true {
            request.wait()
            if stopping { return }
            readFully(serverFD, buffer, size)
            writeFully(serverFD, buffer, size)
            served.signal()
        }
    }

    private func writer() {
        while true {
            writeRequest.wait()
            if stopping { return }
            writeFully(clientFD, outgoing!, size)
            outgoing!.deallocate()
            outgoing = nil
            wrote.signal()
        }
    }

    /// One echo of `bytes`; milliseconds.
    func exchange(bytes: Int, freshBuffers: Bool = false) throws -> Double {
        if capacity < bytes {
            buffer.deallocate()
            buffer = .allocate(byteCount: bytes, alignment: 64)
            memset(buffer, 0, bytes)
            capacity = bytes
        }
        let out = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64)
        let back = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64)
        defer { back.deallocate() }
        memset(out, 0x3F, bytes)
        if !freshBuffers { memset(back, 0, bytes) }
        size = bytes
        outgoing = out
        let start = ContinuousClock.now
        request.signal()
        writeRequest.signal()
        readFully(clientFD, back, bytes)
        let elapsed = ContinuousClock.now - start
        wrote.wait()
        served.wait()
        return ms(elapsed)
    }

    func stop() {
        stopping = true
        request.signal()
        writeRequest.signal()
        close(clientFD); close(serverFD); close(listenFD)
    }
}

private func readFully(_ fd: Int32, _ p: UnsafeMutableRawPointer, _ n: Int) {
    var off = 0
    while off < n {
        let r = recv(fd, p + off, n - off, 0)
        if r > 0 { off += r } else if r < 0 && errno == EINTR { continue } else { return }
    }
}

private func writeFully(_ fd: Int32, _ p: UnsafeMutableRawPointer, _ n: Int) {
    var off = 0
    while off < n {
        let r = send(fd, p + off, n - off, Int32(MSG_NOSIGNAL))
        if r > 0 { off += r } else if r < 0 && errno == EINTR { continue } else { return }
    }
}

private func check(_ rc: Int32, _ what: String) throws {
    if rc < 0 { throw RPCError(.internal, "\(what) failed: \(String(cString: strerror(errno)))") }
}

/// Process-wide peak resident set (VmHWM), bytes.
private func peakRSS() -> Int {
    guard let s = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return 0 }
    for line in s.split(separator: "\n") where line.hasPrefix("VmHWM:") {
        let kb = line.split(separator: " ").compactMap { Int($0) }.first ?? 0
        return kb * 1024
    }
    return 0
}

private func median(_ xs: [Double]) -> Double {
    let s = xs.sorted()
    return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
}

private func ms(_ d: Duration) -> Double {
    Double(d.components.seconds) * 1000 + Double(d.components.attoseconds) / 1e15
}

private func fmt(_ x: Double) -> String { String(format: "%.2f", x) }
