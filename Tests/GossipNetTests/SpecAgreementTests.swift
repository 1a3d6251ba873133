// SPEC, vectors and server agree (issue 8, defects 1 and 4, the transport's share): each test
// checks the server's bytes on the wire and the SPEC sentence that describes them, so either
// drifting fails a test.
import Foundation
import Testing
import GossipWire
@testable import GossipNet
#if canImport(Glibc)
import Glibc
#endif

private let protocolDir = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    .appendingPathComponent("../../Protocol").standardizedFileURL

private func spec() throws -> String {
    try String(contentsOf: protocolDir.appendingPathComponent("SPEC.md"), encoding: .utf8)
}

/// The text of SPEC section `number` (from its heading to the next heading of its level or above).
private func section(_ number: String) throws -> String {
    let lines = try spec().split(separator: "\n", omittingEmptySubsequences: false)
    guard let start = lines.firstIndex(where: { $0.hasPrefix("## \(number). ") || $0.hasPrefix("### \(number) ") }) else {
        Issue.record("SPEC has no section \(number)")
        return ""
    }
    let level = lines[start].prefix(while: { $0 == "#" }).count
    var end = start + 1
    while end < lines.count {
        let l = lines[end]
        let hashes = l.prefix(while: { $0 == "#" }).count
        if hashes > 0 && hashes <= level && l.dropFirst(hashes).hasPrefix(" ") { break }
        end += 1
    }
    return lines[start..<end].joined(separator: "\n")
}

/// A golden vector's bytes (comment lines dropped, hex digits only).
private func vector(_ name: String) throws -> [UInt8] {
    let text = try String(contentsOf: protocolDir.appendingPathComponent("vectors/\(name).hex"), encoding: .utf8)
    let hex = text.split(separator: "\n").filter { !$0.hasPrefix("#") }.joined().filter { $0.isHexDigit }
    var out: [UInt8] = []
    var i = hex.startIndex
    while i < hex.endIndex {
        let j = hex.index(i, offsetBy: 2)
        out.append(UInt8(hex[i..<j], radix: 16)!)
        i = j
    }
    return out
}

/// Collapses runs of whitespace, so sentences wrapped across lines in SPEC compare as one line.
private func flat(_ s: String) -> String {
    s.split(whereSeparator: { $0.isWhitespace }).joined(separator: " ")
}

/// A server on one end of a socket pair; the test speaks raw bytes on the other.
private func rawServer(_ config: ServerConfig = .init(), _ setup: (RPCServer) -> Void = { _ in }) throws -> (RPCServer, Int32) {
    let server = RPCServer(config: config)
    setup(server)
    let (a, b) = try Sys.socketpair()
    server.adopt(socket: a)
    return (server, b)
}

private func stop(_ server: RPCServer) async {
    let done = Flag()
    server.shutdown(grace: .seconds(1)) { done.set() }
    await waitFor("server shutdown") { done.isSet }
}

@Suite struct SpecAgreementTests {
    @Test func versionErrorIsTheSpecTextAndTheVectorByteForByte() async throws {
        let text = FrameHeader.unsupportedVersionText(3)
        #expect(text == "protocol version 3 is not supported; this node speaks version 2")
        #expect(flat(try section("2")).contains("`\(text)`"), "SPEC §2 must quote the server's version-error text")
        #expect(flat(try section("10")).contains(text), "SPEC §10 must quote the server's version-error text")
        let (server, fd) = try rawServer()
        defer { Sys.close(fd) }
        var h = FrameHeader(frameLength: 24, flags: .endStream, type: .ping, requestID: 7,
                            chunkRawLength: 0, messageRawLength: 0, checksum: 0)
        h.version = 3
        writeAll(fd, h.bytes)
        let (reply, sawEnd) = readToEnd(fd, timeout: .seconds(10))
        #expect(sawEnd, "the server must close after a version error")
        #expect(reply == (try vector("error_unsupported_version")), "the server's reply must be the golden vector byte for byte")
        await stop(server)
    }

    @Test func aRequestOfTypeConnectionIsAConnectionLevelError() async throws {
        #expect(flat(try section("8.1")).contains("A request of type 0xFFFF"), "SPEC §8.1 must state the rule for a request of type 0xFFFF")
        let (server, fd) = try rawServer { $0.register(.ping, handler: echo) }
        defer { Sys.close(fd) }
        let bad = FrameHeader(frameLength: 24, flags: .endStream, type: .connection, requestID: 5,
                              chunkRawLength: 0, messageRawLength: 0, checksum: 0)
        writeAll(fd, bad.bytes)
        let (reply, sawEnd) = readToEnd(fd, timeout: .seconds(10))
        #expect(sawEnd)
        let messages = try decodeAll(reply)
        #expect(messages.count == 1)
        let m = try #require(messages.first)
        #expect(m.type == .connection && m.kind == .error && m.requestID == 0)
        let e = try RPCErrorPayload.decode(m.payload)
        #expect(e.code == .invalidArgument)
        #expect(e.message.contains("0xFFFF"))
        await stop(server)
    }

    @Test func requestsFlowFromClientToServerOnly() async throws {
        let s1 = flat(try section("1"))
        #expect(s1.contains("A server ignores replies it receives and a client ignores requests"),
                "SPEC §1 must say that requests flow from the connecting side only")
        // The server skips a reply and answers the request that follows it.
        let (server, fd) = try rawServer { $0.register(.ping, handler: echo) }
        defer { Sys.close(fd) }
        let stray = try OutboundMessage(type: .ping, kind: .response, requestID: 3, payload: bytes("stray")).serialized()
        let ping = try OutboundMessage(type: .ping, kind: .request, requestID: 4, payload: bytes("real")).serialized()
        writeAll(fd, stray + ping)
        let got = try readFirstMessages(fd, timeout: .seconds(10))
        #expect(got.count == 1)
        #expect(got.first?.requestID == 4 && got.first.map(text) == "real")
        #expect(server.stats.connections == 1, "a stray reply must not close the connection")
        await stop(server)

        // The client skips a request and still gets its reply.
        let (a, b) = try Sys.socketpair()
        defer { Sys.close(a) }
        let client = RPCClient()
        let ep = Endpoint(host: "socketpair", port: 9)
        client.adopt(socket: b, as: ep)
        let result = Box<Result<InboundMessage, RPCError>>()
        client.call(ep, type: .ping, payload: bytes("hi"), deadline: .seconds(10)) { result.append($0) }
        let req = try #require(try readFirstMessages(a, timeout: .seconds(20)).first)
        let fromServer = try OutboundMessage(type: .status, kind: .request, requestID: req.requestID, payload: bytes("?")).serialized()
        let reply = try OutboundMessage(type: .ping, kind: .response, requestID: req.requestID, payload: bytes("hi")).serialized()
        writeAll(a, fromServer + reply)
        await waitFor("the client's reply") { result.count == 1 }
        #expect((try? result.all.first?.get()).map(text) == "hi")
        client.close()
    }

    @Test func truncatedZlibIsInvalidArgumentAsSpecSays() throws {
        #expect(flat(try section("7")).contains("A truncated stream (its input ends before the zlib stream does) is INVALID_ARGUMENT"))
        let raw = pattern(3000)
        let z = try Compression.deflate(raw.bytes, level: 6, shuffle: false).array
        for cut in 1..<z.count {
            let d = MessageDecoder()
            let h = FrameHeader(frameLength: UInt32(24 + cut), flags: [.compressed, .endStream], type: .status, requestID: 1,
                                chunkRawLength: 3000, messageRawLength: 3000, checksum: 0)
            do {
                try d.append(h.bytes + z[0..<cut])
                Issue.record("a zlib stream cut to \(cut) of \(z.count) bytes was accepted")
            } catch {
                #expect(error.statusCode == .invalidArgument, "cut at \(cut): \(error)")
            }
        }
    }

    @Test func pingOverItsLimitIsRefusedNotEchoed() async throws {
        #expect(flat(try section("11")).contains("`maxPingBytes`"))
        let (server, fd) = try rawServer { $0.register(.ping, handler: echo) }
        defer { Sys.close(fd) }
        let n = Limits.default.maxPingBytes + 1
        let h = FrameHeader(frameLength: UInt32(24 + n), flags: .endStream, type: .ping, requestID: 2,
                            chunkRawLength: UInt32(n), messageRawLength: UInt32(n), checksum: 0)
        writeAll(fd, h.bytes + [UInt8](repeating: 0x41, count: n))
        let (reply, sawEnd) = readToEnd(fd, timeout: .seconds(10))
        #expect(sawEnd)
        #expect(reply.count < 1000, "the Ping must not be echoed (\(reply.count) bytes came back)")
        let m = try #require(try decodeAll(reply).first)
        #expect(m.type == .connection && m.kind == .error)
        #expect(try RPCErrorPayload.decode(m.payload).code == .resourceExhausted)
        await stop(server)
    }

    @Test func fitModelBoundsModelMessagesAndTheBudget() async throws {
        var config = ServerConfig()
        config.receiveBuffers = ReceiveBuffers(budget: 1 << 30)
        let (server, fd) = try rawServer(config) { $0.register(.gossipExchange, handler: echo) }
        defer { Sys.close(fd) }
        // Connections accepted after the call use the fitted limits.
        server.fitModel(payloadBytes: 1 << 20)
        #expect(server.limits.maxMessageBytes == (1 << 20) + Limits.default.maxControlMessageBytes)
        #expect(config.receiveBuffers.budget == 2 * server.limits.maxMessageBytes + (32 << 20))
        let (a, b) = try Sys.socketpair()
        defer { Sys.close(b) }
        server.adopt(socket: a)
        let h = FrameHeader(frameLength: 24, flags: [], type: .gossipExchange, requestID: 2,
                            chunkRawLength: 0, messageRawLength: 4 << 20, checksum: 0)
        writeAll(b, h.bytes)
        let (reply, sawEnd) = readToEnd(b, timeout: .seconds(10))
        #expect(sawEnd)
        let m = try #require(try decodeAll(reply).first)
        let e = try RPCErrorPayload.decode(m.payload)
        #expect(e.code == .resourceExhausted)
        #expect(e.message.contains("maxMessageBytes"))
        await stop(server)
    }

    @Test func receiveBudgetIsSharedByAllConnectionsAndRefusesWhatDoesNotFit() async throws {
        #expect(flat(try section("11")).contains("receive budget"))
        var config = ServerConfig()
        config.receiveBuffers = ReceiveBuffers(budget: 8 << 20)
        let buffers = config.receiveBuffers
        let (server, first) = try rawServer(config) { s in
            s.register(.gossipExchange, handler: echo)
            s.register(.status) { _, r in r.reply(bytes("ok")) }
        }
        // The first connection starts a 6 MiB message and stalls: its buffer is charged.
        let big = FrameHeader(frameLength: UInt32(24 + (1 << 20)), flags: [], type: .gossipExchange, requestID: 2,
                              chunkRawLength: 1 << 20, messageRawLength: 6 << 20, checksum: 0)
        writeAll(first, big.bytes + [UInt8](repeating: 1, count: 1 << 20))
        await waitFor("the first message's buffer to be charged") { buffers.chargedBytes == 6 << 20 }
        // A second connection's message of the same size does not fit: refused, closed.
        let (a, second) = try Sys.socketpair()
        defer { Sys.close(second) }
        server.adopt(socket: a)
        writeAll(second, big.bytes)
        let (reply, sawEnd) = readToEnd(second, timeout: .seconds(10))
        #expect(sawEnd)
        let m = try #require(try decodeAll(reply).first)
        let e = try RPCErrorPayload.decode(m.payload)
        #expect(e.code == .resourceExhausted)
        #expect(e.message.contains("receive budget"))
        // Small requests are still served meanwhile.
        let (c, d) = try Sys.socketpair()
        let client = RPCClient()
        server.adopt(socket: c)
        client.adopt(socket: d, as: Endpoint(host: "socketpair", port: 4))
        let ok = try await client.call(Endpoint(host: "socketpair", port: 4), type: .status, payload: bytes(""), deadline: .seconds(10))
        #expect(text(ok) == "ok")
        client.close()
        // When the stalled connection goes away, so does its charge.
        Sys.close(first)
        await waitFor("the budget to be credited back") { buffers.chargedBytes == 0 }
        await stop(server)
    }
}
