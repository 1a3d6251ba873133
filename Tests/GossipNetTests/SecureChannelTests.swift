// The Noise channel of SPEC §13 over real sockets: a handshake and real frames both ways;
// admission (wrong key, no key, plaintext client, plaintext server, garbage, huge length
// prefix, deadline): closed, no handler called, UNAUTHENTICATED with a helpful text; a byte
// flipped in a record (through a relay) closes with a logged reason; verifyPeer refusing;
// key log lines.
import Foundation
import Testing
import GossipSecure
import GossipWire
@testable import GossipNet
#if canImport(Glibc)
import Glibc
#endif

/// Two node identities in one network, and a stranger with another key.
struct SecureFixture {
    let network = NetworkKey.generate()
    let serverIdentity = IdentityKey.generate()
    let clientIdentity = IdentityKey.generate()

    var server: ChannelSecurity { ChannelSecurity(networkKey: network, identity: serverIdentity) }
    var client: ChannelSecurity { ChannelSecurity(networkKey: network, identity: clientIdentity) }
    var stranger: ChannelSecurity { ChannelSecurity(networkKey: NetworkKey.generate(), identity: IdentityKey.generate()) }

    /// A secure server with a counting echo handler for Ping and GossipExchange.
    func startServer(_ tweak: (inout ServerConfig) -> Void = { _ in }) throws -> (RPCServer, Endpoint, Box<String>, Flag, Box<[UInt8]?>) {
        var config = ServerConfig()
        config.security = server
        let log = Box<String>()
        config.securityLog = { log.append($0) }
        tweak(&config)
        let s = RPCServer(config: config)
        let called = Flag()
        let identities = Box<[UInt8]?>()
        let handler: RPCHandler = { m, r in
            called.set()
            identities.append(r.remoteIdentity)
            r.reply(m.payload, options: .init(checksum: true))
        }
        s.register(.ping, handler: handler)
        s.register(.gossipExchange, handler: handler)
        let e = try s.start(host: "127.0.0.1", port: 0)
        return (s, e, log, called, identities)
    }
}

func stopServer(_ s: RPCServer) async {
    let done = Flag()
    s.shutdown(grace: .seconds(1)) { done.set() }
    await waitFor("server shutdown") { done.isSet }
}

/// Expects the call to fail with `code` and a message containing `fragment`.
func expectFailure(_ client: RPCClient, _ endpoint: Endpoint, _ code: StatusCode, containing fragment: String,
                   sourceLocation: SourceLocation = #_sourceLocation) async {
    do {
        _ = try await client.call(endpoint, type: .ping, payload: bytes("hello"), deadline: .seconds(15))
        Issue.record("the call succeeded; expected \(code.name)", sourceLocation: sourceLocation)
    } catch {
        #expect(error.code == code, "got \(error)", sourceLocation: sourceLocation)
        #expect(error.message.contains(fragment), "message was: \(error.message)", sourceLocation: sourceLocation)
    }
}

@Suite(.serialized) struct SecureChannelTests {
    @Test func handshakeThenFramesBothWaysOverTCP() async throws {
        let f = SecureFixture()
        var limits = Limits()
        limits.chunkBytes = 100_000   // a chunked message: frames span records and records span frames
        let (server, endpoint, log, called, identities) = try f.startServer { $0.limits = limits }
        let client = RPCClient(limits: limits, security: f.client)
        for i in 0..<20 {
            let r = try await client.call(endpoint, type: .ping, payload: bytes("ping \(i)"), deadline: .seconds(10))
            #expect(text(r) == "ping \(i)")
        }
        for size in [1, 65_519 - 24, 65_519 - 23, 65_519, 1_000_000, 3_000_001] {
            let p = pattern(size, seed: UInt8(size % 251))
            let r = try await client.call(endpoint, type: .gossipExchange, payload: p, deadline: .seconds(30))
            #expect(r.payload.array == p.array, "payload of \(size) bytes came back changed")
        }
        #expect(called.count == 26)
        #expect(identities.all.allSatisfy { $0 == f.clientIdentity.publicKey })
        #expect(log.all.isEmpty, "\(log.all)")
        // The traffic really is encrypted: a server without security cannot talk to it (see
        // the admission tests), and the byte counts include the record overhead.
        #expect(client.bytesOut > 3_000_001 + 1_000_000)
        client.close()
        await stopServer(server)
    }

    @Test func secureOverASocketPairAndRemoteIdentity() async throws {
        let f = SecureFixture()
        var config = ServerConfig()
        config.security = f.server
        let server = RPCServer(config: config)
        let seen = Box<[UInt8]?>()
        let control = Box<Bool>()
        server.register(.ping) { m, r in seen.append(r.remoteIdentity); control.append(r.isControl); r.reply(m.payload) }
        let (a, b) = try Sys.socketpair()
        server.adopt(socket: a)
        let keys = Box<[UInt8]>()
        let client = RPCClient(security: f.client, verifyPeer: { _, key in keys.append(key); return nil })
        let endpoint = Endpoint(host: "pair", port: 1)
        client.adopt(socket: b, as: endpoint)
        let r = try await client.call(endpoint, type: .ping, payload: bytes("over a pair"), deadline: .seconds(10))
        #expect(text(r) == "over a pair")
        #expect(seen.all == [f.clientIdentity.publicKey])
        #expect(control.all == [false])
        #expect(keys.all == [f.serverIdentity.publicKey])
        client.close()
        await stopServer(server)
    }

    @Test func wrongOrMissingKeyIsRefusedAndNothingReachesAHandler() async throws {
        let f = SecureFixture()
        let (server, endpoint, log, called, _) = try f.startServer()

        // Wrong network key: fails at message 3; the server closes without a word.
        let stranger = RPCClient(security: f.stranger)
        await expectFailure(stranger, endpoint, .unauthenticated, containing: "network key")
        stranger.close()

        // No key at all (a plaintext client): one plaintext UNAUTHENTICATED error that says what to do.
        let plain = RPCClient()
        await expectFailure(plain, endpoint, .unauthenticated, containing: "requires an encrypted channel")
        await expectFailure(plain, endpoint, .unauthenticated, containing: "--network-key FILE")
        plain.close()

        #expect(called.count == 0, "a handler ran for an unauthenticated peer")
        await waitFor("the security log to name the failed handshake and the plaintext client") {
            log.all.contains { $0.contains("handshake message 3 was refused") } && log.all.contains { $0.contains("plaintext client") }
        }
        await stopServer(server)
    }

    @Test func secureClientToAPlaintextServerIsToldSo() async throws {
        let server = RPCServer()
        server.register(.ping, handler: echo)
        let endpoint = try server.start(host: "127.0.0.1", port: 0)
        let client = RPCClient(security: SecureFixture().client)
        await expectFailure(client, endpoint, .unauthenticated, containing: "answered in plaintext: it runs with --insecure")
        #expect(server.stats.requests == 0)
        client.close()
        await stopServer(server)
    }

    @Test func garbageAndHugeLengthPrefixesAreClosedSilently() async throws {
        let f = SecureFixture()
        // 1 s: a 2-byte input waits for 3 more bytes (to tell plaintext from garbage) until then.
        let (server, endpoint, log, called, _) = try f.startServer { $0.security!.handshakeTimeout = .seconds(1) }
        let inputs: [[UInt8]] = [
            [0xFF, 0xFF] + [UInt8](repeating: 0x41, count: 300),           // huge length prefix
            Array("GET / HTTP/1.1\r\nHost: x\r\n\r\n".utf8),                 // another protocol
            [0x00, 0x00],                                                   // zero length
            [0x00, 0x30] + [UInt8](repeating: 0, count: 48),                // message 1 with a zero (low-order) key
            (0..<64).map { UInt8(truncatingIfNeeded: $0 &* 97 &+ 13) },      // noise
        ]
        for input in inputs {
            let fd = try await rawConnect(endpoint)
            writeAll(fd, input)
            let (got, sawEnd) = readToEnd(fd, timeout: .seconds(10))
            #expect(sawEnd, "the server kept the connection open after \(input.prefix(4))")
            #expect(got.isEmpty, "the server answered \(got.count) bytes to garbage \(input.prefix(4))")
            Sys.close(fd)
        }
        #expect(called.count == 0)
        await waitFor("5 security log lines") { log.count >= 5 }
        #expect(log.all.contains { $0.contains("announced 65535 bytes") })
        await stopServer(server)
    }

    @Test func aStalledHandshakeMeetsItsDeadline() async throws {
        let f = SecureFixture()
        let (server, endpoint, log, _, _) = try f.startServer { $0.security!.handshakeTimeout = .milliseconds(300) }
        let fd = try await rawConnect(endpoint)
        writeAll(fd, [0x00, 0x30, 1, 2, 3])   // a message 1 that never finishes
        let start = ContinuousClock.now
        let (got, sawEnd) = readToEnd(fd, timeout: .seconds(10))
        #expect(sawEnd && got.isEmpty)
        #expect(ContinuousClock.now - start < .seconds(5))
        Sys.close(fd)
        await waitFor("the deadline to be logged") { log.all.contains { $0.contains("no complete secure handshake within") } }
        await stopServer(server)
    }

    @Test func verifyPeerRefusesBeforeAnyRequestIsSent() async throws {
        let f = SecureFixture()
        let (server, endpoint, _, called, _) = try f.startServer()
        let client = RPCClient(security: f.client, verifyPeer: { ep, key in
            "\(ep) proved key \(SecureChannel.hex(key).prefix(8))..., but this node pinned another one; refusing"
        })
        await expectFailure(client, endpoint, .unauthenticated, containing: "pinned another one")
        #expect(called.count == 0)
        #expect(server.stats.requests == 0)
        client.close()
        await stopServer(server)
    }

    /// A byte flipped anywhere in a record (length prefix, ciphertext, tag) closes the
    /// connection with a logged reason; the request is never applied.
    @Test(arguments: [0, 1, 2, 20, 49])   // the record is 2 + 32 + 16 bytes: prefix, ciphertext, last tag byte
    func aFlippedByteInARecordClosesTheConnection(offsetInRecord: Int) async throws {
        let f = SecureFixture()
        let (server, endpoint, log, called, _) = try f.startServer { $0.frameTimeout = .seconds(1) }
        // Client stream: message 1 (2 + 48), message 3 (2 + 64), then the first record.
        let handshakeBytes = 2 + 48 + 2 + 64
        let relay = try FlipRelay(upstream: endpoint, flipAt: handshakeBytes + offsetInRecord)
        defer { relay.stop() }
        let client = RPCClient(security: f.client)
        do {
            _ = try await client.call(relay.endpoint, type: .ping, payload: bytes("apply me"), deadline: .seconds(15))
            Issue.record("the altered request was answered")
        } catch {
            #expect(error.code == .unauthenticated || error.code == .unavailable, "\(error)")
        }
        #expect(called.count == 0, "an altered record reached a handler")
        await waitFor("the server to log why it closed") {
            log.all.contains { $0.contains("failed authentication") || $0.contains("declares") || $0.contains("did not arrive whole") }
        }
        if offsetInRecord >= 2 {
            #expect(log.all.contains { $0.contains("record 0 from") && $0.contains("failed authentication") }, "\(log.all)")
        }
        client.close()
        await stopServer(server)
    }

    /// Over the connection limit (with nothing idle to evict, SPEC §11) a secure server still
    /// completes the handshake, so the client reads the sealed RESOURCE_EXHAUSTED answer (not
    /// a silent close it would take for a wrong key).
    @Test func overTheConnectionLimitTheRefusalIsSealed() async throws {
        let f = SecureFixture()
        let (server, endpoint, _, _, _) = try f.startServer { $0.maxConnections = 1 }
        let parked = Box<RPCResponder>()
        server.register(.status) { _, r in parked.append(r) }
        let first = RPCClient(security: f.client)
        // A request in flight: the one connection is busy, so it cannot be evicted.
        first.call(endpoint, type: .status, payload: bytes(""), deadline: .seconds(30)) { _ in }
        #expect(await waitFor("the first request to be in flight") { server.stats.inFlight == 1 })
        let second = RPCClient(security: f.client)
        await expectFailure(second, endpoint, .resourceExhausted, containing: "limit of 1 connections")
        for r in parked.all { r.reply(bytes("")) }
        first.close()
        second.close()
        await stopServer(server)
    }

    /// Backpressure still holds on a sealed connection: a member that sends requests for large
    /// replies and never reads is cut off once its waiting replies pass the bound.
    @Test func aSecureClientThatNeverReadsIsCutOff() async throws {
        let f = SecureFixture()
        let big = pattern(1 << 20)
        let (server, endpoint, _, _, _) = try f.startServer { $0.maxQueuedBytes = 4 << 20 }
        server.register(.getModel) { _, r in r.reply(big, options: .init(checksum: false)) }
        let fd = try await rawConnect(endpoint)
        defer { close(fd) }
        var sender = try rawHandshake(fd, f.client)
        var plaintext: [UInt8] = []
        for id in 1...60 { plaintext += OutboundMessage.empty(type: .getModel, kind: .request, requestID: UInt32(id)).serialized() }
        var body = [UInt8](repeating: 0, count: plaintext.count + 16)
        try plaintext.withUnsafeBytes { p in try body.withUnsafeMutableBytes { o in try sender.seal([p], into: [o.baseAddress!], parallel: false) } }
        writeAll(fd, [UInt8(body.count >> 8), UInt8(body.count & 0xFF)] + body)
        #expect(await waitFor("the server to drop the connection") { server.stats.connections == 0 })
        #expect(server.stats.requests >= 8, "the server dropped it before replies piled up")
        await stopServer(server)
    }

    @Test func keyLogLinesNameTheSessionAndItsKeys() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("keylog-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("keys.log").path
        let f = SecureFixture()
        let log = try KeyLog(path: path)
        let (server, endpoint, _, _, _) = try f.startServer { $0.security!.keyLog = log }
        var cs = f.client
        cs.keyLog = log
        let client = RPCClient(security: cs)
        _ = try await client.call(endpoint, type: .ping, payload: bytes("x"), deadline: .seconds(10))
        client.close()
        await stopServer(server)
        let lines = try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n")
        #expect(lines.count == 2, "one line per side of the one session: \(lines)")
        #expect(Set(lines).count == 1, "both sides log the same session line")
        let fields = lines[0].split(separator: " ")
        #expect(fields.count == 4 && fields[0] == "GOSSIP_NOISE_AESGCM")
        #expect(fields.dropFirst().allSatisfy { $0.count == 64 && $0.allSatisfy { "0123456789abcdef".contains($0) } })
        #expect(Sys.mode(path) == 0o600)
        // A key log others can read is refused.
        let open = dir.appendingPathComponent("open.log").path
        FileManager.default.createFile(atPath: open, contents: nil, attributes: [.posixPermissions: 0o644])
        #expect(throws: RPCError.self) { _ = try KeyLog(path: open) }
    }
}

/// Runs the client side of the handshake on a raw non-blocking socket (test helper); returns
/// the sending record state.
func rawHandshake(_ fd: Int32, _ security: ChannelSecurity) throws -> RecordCipher {
    var hs = try ChannelHandshake(role: .initiator, security: security)
    writeAll(fd, try hs.start())
    while true {
        let want = hs.wanted
        guard want > 0, pollReadable(fd, timeout: .seconds(10)) else { throw RPCError(.deadlineExceeded, "no message 2") }
        var buf = [UInt8](repeating: 0, count: want)
        let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, want, 0) }
        if n < 0 && (errno == EAGAIN || errno == EINTR) { continue }
        guard n > 0 else { throw RPCError(.unavailable, "the server closed during the handshake") }
        switch buf[0..<n].withUnsafeBytes({ hs.consume($0) }) {
        case .needMore: continue
        case .verify:
            let (m3, transport) = try hs.finish()
            writeAll(fd, m3)
            return RecordCipher(transport.sender, rekeyInterval: SecureChannel.rekeyInterval)
        default: throw RPCError(.unauthenticated, "the handshake failed")
        }
    }
}

/// A TCP relay on 127.0.0.1 that forwards one connection to `upstream` and flips one bit of
/// the client-to-server byte at `flipAt`. Blocking threads; for tests.
final class FlipRelay: @unchecked Sendable {
    let endpoint: Endpoint
    private let listenFD: Int32
    private let flipAt: Int
    private let upstream: Endpoint
    private let lock = NSLock()
    private var fds: [Int32] = []

    init(upstream: Endpoint, flipAt: Int) throws {
        self.upstream = upstream
        self.flipAt = flipAt
        let l = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(l, $0, len) } }
        listen(l, 4)
        _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(l, $0, &len) } }
        listenFD = l
        endpoint = Endpoint(host: "127.0.0.1", port: UInt16(bigEndian: addr.sin_port))
        Thread { [self] in acceptOne() }.start()
    }

    private func acceptOne() {
        let c = accept(listenFD, nil, nil)
        guard c >= 0 else { return }
        let u = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = upstream.port.bigEndian
        let ok = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(u, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        lock.withLock { fds += [c, u] }
        guard ok == 0 else { shutdown(c, Int32(SHUT_RDWR)); close(c); close(u); return }
        // The two pumps share the pair; the last one to finish closes both.
        let left = Flag()
        let finish: @Sendable () -> Void = { [self] in
            left.set()
            if left.count == 2 {
                lock.withLock { fds.removeAll { $0 == c || $0 == u } }
                close(c)
                close(u)
            }
        }
        Thread { [self] in pump(from: c, to: u, flip: flipAt); finish() }.start()
        Thread { [self] in pump(from: u, to: c, flip: nil); finish() }.start()
    }

    private func pump(from a: Int32, to b: Int32, flip: Int?) {
        var buf = [UInt8](repeating: 0, count: 65536)
        var offset = 0
        while true {
            let n = buf.withUnsafeMutableBytes { recv(a, $0.baseAddress, $0.count, 0) }
            if n <= 0 { break }
            if let flip, flip >= offset && flip < offset + n { buf[flip - offset] ^= 0x10 }
            offset += n
            var sent = 0
            while sent < n {
                let w = buf[sent..<n].withUnsafeBytes { send(b, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                if w <= 0 { shutdown(a, Int32(SHUT_RDWR)); shutdown(b, Int32(SHUT_RDWR)); return }
                sent += w
            }
        }
        shutdown(b, Int32(SHUT_RDWR))
        shutdown(a, Int32(SHUT_RDWR))
    }

    func stop() {
        shutdown(listenFD, Int32(SHUT_RDWR))
        close(listenFD)
        // Wake the pumps; they close their descriptors themselves when both are done.
        lock.withLock {
            for fd in fds { shutdown(fd, Int32(SHUT_RDWR)) }
        }
    }
}
