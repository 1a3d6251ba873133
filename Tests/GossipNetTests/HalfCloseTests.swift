// A client's half-close (SPEC §1): a client that sends its requests and then shuts down its
// sending side (`shutdown(SHUT_WR)`) still gets every reply, then the end of the stream; with
// nothing in flight the server closes at once; a handler that never answers cannot pin the
// half-closed connection (the idle timeout bounds it). Plaintext over real sockets (raw
// client) and the encrypted channel (a client-side `Connection` that half-closes once its
// sealed requests are written). The bug was a race (the server closed on end-of-stream while
// a handler was still running on Dispatch's pool), so the main cases repeat.
import Foundation
import Testing
import GossipSecure
import GossipWire
@testable import GossipNet
#if canImport(Glibc)
import Glibc
#endif

/// A server whose Ping echoes at once and whose GossipExchange echoes after 50 ms (off
/// every thread: no handler blocks) and whose Status never answers (its responders are held).
private func halfCloseServer(_ transport: Transport, security: ChannelSecurity? = nil,
                             idleTimeout: Duration = .seconds(300)) throws -> (RPCServer, Endpoint, Box<RPCResponder>) {
    var config = ServerConfig()
    config.security = security
    config.idleTimeout = idleTimeout
    let server = RPCServer(config: config)
    let held = Box<RPCResponder>()
    server.register(.ping, handler: echo)
    server.register(.gossipExchange) { m, r in
        DispatchQueue.global().asyncAfter(deadline: .now() + .milliseconds(50)) { r.reply(m.payload) }
    }
    server.register(.status) { _, r in held.append(r) }
    switch transport {
    case .socketpair:
        return (server, Endpoint(host: "socketpair", port: 1), held)
    default:
        return (server, try server.start(host: "127.0.0.1", port: 0), held)
    }
}

/// A connected raw socket to `server` over `transport`.
private func rawClient(_ transport: Transport, _ server: RPCServer, _ endpoint: Endpoint) async throws -> Int32 {
    if transport == .socketpair {
        let (a, b) = try Sys.socketpair()
        server.adopt(socket: a)
        return b
    }
    return try await rawConnect(endpoint)
}

/// The requests of one round: `n` of them, ids 1...n, the one at `slow` (if any) a
/// GossipExchange (answered after 50 ms), the rest Pings.
private func requests(_ n: Int, slow: Int?, round: Int) throws -> [OutboundMessage] {
    try (0..<n).map { i in
        try OutboundMessage(type: i == slow ? .gossipExchange : .ping, kind: .request, requestID: UInt32(i + 1),
                            payload: bytes("round \(round) request \(i)"))
    }
}

/// Checks that `replies` answer exactly `sent`, each with its own payload.
private func expectAnswered(_ replies: [InboundMessage], _ n: Int, round: Int,
                            sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(replies.count == n, "round \(round): \(replies.count) of \(n) replies before the end of the stream",
            sourceLocation: sourceLocation)
    #expect(Set(replies.map(\.requestID)) == Set((0..<n).map { UInt32($0 + 1) }), sourceLocation: sourceLocation)
    for m in replies {
        #expect(m.kind == .response, "round \(round): request \(m.requestID) got \(m.kind)", sourceLocation: sourceLocation)
        #expect(text(m) == "round \(round) request \(m.requestID - 1)", sourceLocation: sourceLocation)
    }
}

/// A secure client connection that sends `messages`, half-closes once all of them are
/// written (sealed records handed to the kernel; right after the handshake when there are
/// none), and collects replies until the server ends the stream.
private final class HalfClosingSecureClient: @unchecked Sendable {
    let replies = Box<InboundMessage>()
    let endedCleanly = Box<Bool>()   // one entry at close: true for the server's end of stream
    let reasons = Box<String>()
    private let conn: Connection

    init(fd: Int32, security: ChannelSecurity, messages: [OutboundMessage]) {
        let queue = DispatchQueue(label: "test.halfclose.client")
        conn = Connection(fd: fd, queue: queue, peer: "server", limits: .default, security: security, role: .initiator)
        let conn = conn, replies = replies, endedCleanly = endedCleanly, reasons = reasons
        conn.onMessage = { replies.append($0) }
        conn.onClose = { reason in
            if case .endOfStream = reason { endedCleanly.append(true) } else { endedCleanly.append(false) }
            reasons.append("\(reason)")
        }
        let written = Flag()
        // With no request: once handshake message 3 is written (`established` flushes it right
        // after `onEstablished` returns, on this queue; 64 bytes into an empty socket buffer).
        if messages.isEmpty { conn.onEstablished = { queue.async { if !conn.isClosed { Sys.shutdownWrite(conn.fd) } } } }
        queue.async {
            conn.start()
            for m in messages {
                conn.trySend(m) { ok in
                    guard ok else { return }
                    written.set()
                    if written.count == messages.count { Sys.shutdownWrite(conn.fd) }
                }
            }
        }
    }

    /// Waits for the close; false (an issue recorded) when it did not come.
    func waitClosed() async -> Bool {
        await waitFor("the server to end the half-closed stream", timeout: .seconds(30)) { endedCleanly.count == 1 }
    }
}

@Suite(.serialized) struct HalfCloseTests {
    /// N requests (one answered after 50 ms, long after the end of the stream is read), then
    /// shutdown(SHUT_WR): all N replies, then the end of the stream; 20 rounds per transport
    /// (before the fix every round failed).
    @Test(arguments: Transport.local)
    func plaintextHalfCloseGetsEveryReply(_ transport: Transport) async throws {
        let (server, endpoint, _) = try halfCloseServer(transport)
        for round in 0..<20 {
            let n = 1 + round % 5
            let fd = try await rawClient(transport, server, endpoint)
            defer { Sys.close(fd) }
            let sent = try requests(n, slow: round % n, round: round)
            writeAll(fd, sent.flatMap { $0.serialized() })
            #expect(shutdown(fd, Int32(SHUT_WR)) == 0)
            let (reply, sawEnd) = readToEnd(fd, timeout: .seconds(20))
            #expect(sawEnd, "round \(round): the server never ended the stream")
            expectAnswered(try decodeAll(reply), n, round: round)
        }
        #expect(await waitFor("every half-closed connection to be released") { server.stats.connections == 0 })
        await stopServer(server)
    }

    /// The same over the encrypted channel, whose records reach the end of the stream in
    /// their own read path.
    @Test func secureHalfCloseGetsEveryReply() async throws {
        let f = SecureFixture()
        let (server, endpoint, _) = try halfCloseServer(.ipv4, security: f.server)
        for round in 0..<15 {
            let n = 1 + round % 5
            let c = HalfClosingSecureClient(fd: try await rawConnect(endpoint), security: f.client,
                                            messages: try requests(n, slow: round % n, round: round))
            guard await c.waitClosed() else { break }
            #expect(c.endedCleanly.all == [true], "round \(round): \(c.reasons.all)")
            expectAnswered(c.replies.all, n, round: round)
        }
        #expect(await waitFor("every half-closed connection to be released") { server.stats.connections == 0 })
        await stopServer(server)
    }

    /// With nothing in flight (no request, or every reply already read) a half-close closes
    /// the connection without waiting for any timeout (the idle timeout is 300 s here).
    @Test(arguments: Transport.local)
    func halfCloseWithNothingInFlightClosesAtOnce(_ transport: Transport) async throws {
        let (server, endpoint, _) = try halfCloseServer(transport)
        // No request at all.
        let quiet = try await rawClient(transport, server, endpoint)
        defer { Sys.close(quiet) }
        #expect(shutdown(quiet, Int32(SHUT_WR)) == 0)
        let (nothing, ended) = readToEnd(quiet, timeout: .seconds(20))
        #expect(ended && nothing.isEmpty)
        // A request whose reply was read before the half-close.
        let fd = try await rawClient(transport, server, endpoint)
        defer { Sys.close(fd) }
        writeAll(fd, try requests(1, slow: nil, round: 0)[0].serialized())
        expectAnswered(try readFirstMessages(fd, timeout: .seconds(20)), 1, round: 0)
        #expect(shutdown(fd, Int32(SHUT_WR)) == 0)
        let (rest, sawEnd) = readToEnd(fd, timeout: .seconds(20))
        #expect(sawEnd && rest.isEmpty)
        #expect(await waitFor("both connections to be released") { server.stats.connections == 0 })
        await stopServer(server)
    }

    @Test func secureHalfCloseWithNothingInFlightClosesAtOnce() async throws {
        let f = SecureFixture()
        let (server, endpoint, _) = try halfCloseServer(.ipv4, security: f.server)
        let c = HalfClosingSecureClient(fd: try await rawConnect(endpoint), security: f.client, messages: [])
        if await c.waitClosed() {
            #expect(c.endedCleanly.all == [true], "\(c.reasons.all)")
            #expect(c.replies.all.isEmpty)
        }
        #expect(await waitFor("the connection to be released") { server.stats.connections == 0 })
        await stopServer(server)
    }

    /// A half-closed connection whose handler never answers is closed by the bound (the idle
    /// timeout, 1 s here, counted from the half-close and from each reply written): the
    /// answered request's reply comes first, the unanswered one never does.
    @Test(arguments: Transport.local)
    func unansweredHalfCloseIsClosedByTheBound(_ transport: Transport) async throws {
        let (server, endpoint, held) = try halfCloseServer(transport, idleTimeout: .seconds(1))
        let fd = try await rawClient(transport, server, endpoint)
        defer { Sys.close(fd) }
        let stuck = OutboundMessage.empty(type: .status, kind: .request, requestID: 2)
        writeAll(fd, try requests(1, slow: nil, round: 0)[0].serialized() + stuck.serialized())
        #expect(await waitFor("the Status handler to be called") { held.count == 1 })
        #expect(shutdown(fd, Int32(SHUT_WR)) == 0)
        let (reply, sawEnd) = readToEnd(fd, timeout: .seconds(20))
        #expect(sawEnd, "a handler that never answers kept the half-closed connection open")
        expectAnswered(try decodeAll(reply), 1, round: 0)
        #expect(await waitFor("the connection to be released") { server.stats.connections == 0 })
        await stopServer(server)
        #expect(held.count == 1)   // held until here: dropping it would have answered INTERNAL
    }

    /// A client that closes outright (not a half-close) with a slow request in flight: the
    /// server still releases the connection once the handler answered (its reply then meets a
    /// closed socket), and serves others meanwhile.
    @Test func fullCloseWithARequestInFlightIsReleased() async throws {
        let (server, endpoint, _) = try halfCloseServer(.ipv4)
        for round in 0..<10 {
            let fd = try await rawConnect(endpoint)
            writeAll(fd, try requests(3, slow: round % 3, round: round).flatMap { $0.serialized() })
            Sys.close(fd)
        }
        let fd = try await rawConnect(endpoint)
        defer { Sys.close(fd) }
        writeAll(fd, try requests(2, slow: 1, round: 99).flatMap { $0.serialized() })
        #expect(shutdown(fd, Int32(SHUT_WR)) == 0)
        let (reply, sawEnd) = readToEnd(fd, timeout: .seconds(20))
        #expect(sawEnd)
        expectAnswered(try decodeAll(reply), 2, round: 99)
        #expect(await waitFor("every connection to be released") { server.stats.connections == 0 })
        await stopServer(server)
    }

    @Test func secureUnansweredHalfCloseIsClosedByTheBound() async throws {
        let f = SecureFixture()
        let (server, endpoint, held) = try halfCloseServer(.ipv4, security: f.server, idleTimeout: .seconds(1))
        let messages = [try requests(1, slow: nil, round: 0)[0], OutboundMessage.empty(type: .status, kind: .request, requestID: 2)]
        let c = HalfClosingSecureClient(fd: try await rawConnect(endpoint), security: f.client, messages: messages)
        if await c.waitClosed() {
            #expect(c.endedCleanly.all == [true], "\(c.reasons.all)")
            expectAnswered(c.replies.all, 1, round: 0)
        }
        #expect(held.count == 1)
        #expect(await waitFor("the connection to be released") { server.stats.connections == 0 })
        await stopServer(server)
        #expect(held.count == 1)
    }
}
