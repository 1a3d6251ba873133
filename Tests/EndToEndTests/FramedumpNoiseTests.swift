// framedump on encrypted traffic, the real binary (issue 9 point 6): the Noise session
// fixtures of GossipInspectTests (Fixtures/noise-session.*: a capture, both raw streams, the
// key log) read with and without --keylog, with a wrong key log and a missing one, and the
// live proxy between a client and a server replaying that session, with the key log line
// written during the handshake as a node writes it.
import Foundation
import Testing

@Suite(.serialized)
struct FramedumpNoiseTests {
    static let fixtures = Cluster.repoRoot + "/Tests/GossipInspectTests/Fixtures/"
    static let framedump = Cluster.binary("framedump")
    static let up = "10.0.0.1:40000 > 10.0.0.2:7001", down = "10.0.0.2:7001 > 10.0.0.1:40000"

    @Test func dumpEncryptedCaptureWithAndWithoutKeyLog() throws {
        let pcap = Self.fixtures + "noise-session.pcap", keylog = Self.fixtures + "noise-session.keylog"
        // Without a key log: handshake and records, and a hint on stderr.
        let (code, out, err) = try Cluster.run(Self.framedump, [pcap])
        #expect(code == 0, "\(err)")
        let lines = out.split(separator: "\n").map(String.init)
        #expect(lines.first?.hasPrefix("@0 \(Self.up) noise handshake msg=1 len=48 e=") == true, "\(lines.prefix(3))")
        #expect(lines.contains("@50 \(Self.up) noise handshake msg=3 len=64"))
        #expect(lines.contains("@116 \(Self.up) noise record=0 len=23 encrypted, no key log"))
        #expect(lines.contains { $0.hasPrefix("@0 \(Self.down) noise handshake msg=2 len=96 e=") })
        #expect(lines.contains("@98 \(Self.down) noise record=0 len=49 encrypted, no key log"))
        #expect(err.contains("pass --keylog FILE"), "\(err)")

        // With it: the frames, exactly as in a plaintext session.
        let (code2, out2, err2) = try Cluster.run(Self.framedump, ["--keylog", keylog, pcap])
        #expect(code2 == 0, "\(err2)")
        let lines2 = out2.split(separator: "\n").map(String.init)
        #expect(lines2.contains("@0 \(Self.up) Register request id=1 flags=END|C len=48 raw=24/24"), "\(lines2)")
        #expect(lines2.contains { $0.hasPrefix("@48 \(Self.up) GetModel request id=2") })
        #expect(lines2.contains { $0.contains("\(Self.down) Ping reply") })
        #expect(!lines2.contains { $0.contains("noise record") }, "every record was decrypted")
        #expect(err2.isEmpty, "\(err2)")
        let (code3, out3, _) = try Cluster.run(Self.framedump, ["--keylog", keylog, "-o", "json", "--type", "Ping", pcap])
        #expect(code3 == 0)
        #expect(out3.split(separator: "\n").count == 2 && out3.contains(#""type":"Ping""#) && !out3.contains(#""noise""#))
        let (code4, _, _) = try Cluster.run(Self.framedump, ["--check", "--keylog", keylog, pcap])
        #expect(code4 == 0)
        // A raw stream as the proxy records it (the server's direction alone: found by its first record).
        let (code5, out5, err5) = try Cluster.run(Self.framedump, ["--keylog", keylog, Self.fixtures + "noise-session-s2c.bin"])
        #expect(code5 == 0, "\(err5)")
        #expect(out5.contains("GetModel reply") && out5.contains("Ping reply") && !out5.contains("noise record"))
    }

    @Test func dumpWithAWrongOrMissingKeyLog() throws {
        let c = try Cluster("framedump-noise")
        defer { c.shutdown(); try? FileManager.default.removeItem(atPath: c.dir) }
        let pcap = Self.fixtures + "noise-session.pcap"
        // The session's line with its two keys swapped: record 0 of each direction fails.
        let text = try String(contentsOfFile: Self.fixtures + "noise-session.keylog", encoding: .utf8)
        let line = try #require(text.split(separator: "\n").last).split(separator: " ")
        let wrong = "\(c.dir)/wrong.keylog"
        try "\(line[0]) \(line[1]) \(line[3]) \(line[2])\n".write(toFile: wrong, atomically: true, encoding: .utf8)
        let (code, out, err) = try Cluster.run(Self.framedump, ["--keylog", wrong, pcap])
        #expect(code == 1, "\(out)\(err)")
        #expect(out.contains("@116 \(Self.up) noise record=0 len=23 failed authentication"))
        #expect(err.contains("\(Self.up): record 0 (23 bytes at byte offset 116) failed authentication with the key log's keys of session e="), "\(err)")
        #expect(err.contains("does not hold this session's keys"))
        #expect(!out.contains("Register"))
        let (code2, _, err2) = try Cluster.run(Self.framedump, ["--keylog", "\(c.dir)/none.keylog", pcap])
        #expect(code2 == 2 && err2.contains("cannot read key log \(c.dir)/none.keylog"), "\(err2)")
    }

    /// The proxy between a client and a server that replay the fixture session; the key log
    /// line appears after message 2, as a node writes it at handshake time, in a file that
    /// did not exist when the proxy started.
    @Test func proxyDecryptsWithAKeyLogWrittenDuringTheHandshake() throws {
        try proxySession(lineAfterRequest: false)
    }

    /// The line appears only after the client sent its requests, and the server holds its
    /// reply back until the requests show: with no bytes flowing, the proxy's retry finds it.
    @Test func proxyFindsALateKeyLogLineOnAQuietConnection() throws {
        try proxySession(lineAfterRequest: true)
    }

    func proxySession(lineAfterRequest: Bool) throws {
        let c = try Cluster("framedump-noise-proxy")
        defer { c.shutdown(); try? FileManager.default.removeItem(atPath: c.dir) }
        let c2s = try [UInt8](Data(contentsOf: URL(fileURLWithPath: Self.fixtures + "noise-session-c2s.bin")))
        let s2c = try [UInt8](Data(contentsOf: URL(fileURLWithPath: Self.fixtures + "noise-session-s2c.bin")))
        let keylog = "\(c.dir)/keys.log", out = "\(c.dir)/proxy.out", ready = "\(c.dir)/proxy.ready"
        let keylogText = try String(contentsOfFile: Self.fixtures + "noise-session.keylog", encoding: .utf8)

        // The server: message 2 after message 1, the rest after the rest (and after `reply`).
        let (listener, port) = try Sockets.listen()
        let served = DispatchSemaphore(value: 0), reply = DispatchSemaphore(value: 0)
        final class Box: @unchecked Sendable { var received: [UInt8] = [] }
        let box = Box()
        Thread.detachNewThread {
            defer { close(listener); served.signal() }
            let fd = accept(listener, nil, nil)
            guard fd >= 0 else { return }
            defer { close(fd) }
            Sockets.setTimeout(fd)
            box.received = Sockets.read(fd, 50)
            Sockets.write(fd, Array(s2c[0..<98]))
            box.received += Sockets.read(fd, c2s.count - 50)
            guard reply.wait(timeout: .now() + 120) == .success else { return }
            Sockets.write(fd, Array(s2c[98...]))
        }

        _ = FileManager.default.createFile(atPath: out, contents: nil)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: Self.framedump)
        p.arguments = ["proxy", "--upstream", "127.0.0.1:\(port)", "--ready-file", ready, "--keylog", keylog]
        p.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: out))
        p.standardError = FileHandle.nullDevice
        try p.run()
        defer { kill(p.processIdentifier, SIGKILL); p.waitUntilExit() }
        var endpoint = ""
        try c.wait("the proxy listens") {
            endpoint = ((try? String(contentsOfFile: ready, encoding: .utf8)) ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
            return !endpoint.isEmpty
        }
        let proxyPort = try #require(UInt16(endpoint.split(separator: ":").last ?? ""))
        func printed() -> [String] {
            ((try? String(contentsOfFile: out, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
        }

        // The client.
        let fd = try Sockets.connect(port: proxyPort)
        defer { close(fd) }
        Sockets.write(fd, Array(c2s[0..<50]))
        #expect(Sockets.read(fd, 98) == Array(s2c[0..<98]))
        if !lineAfterRequest {
            try keylogText.write(toFile: keylog, atomically: true, encoding: .utf8)
            reply.signal()
        }
        Sockets.write(fd, Array(c2s[50...]))
        if lineAfterRequest {
            try c.wait("the proxy showed the handshake") { printed().contains("@50 #1 c>s noise handshake msg=3 len=64") }
            try keylogText.write(toFile: keylog, atomically: true, encoding: .utf8)
            try c.wait("the proxy decrypted the requests of a quiet connection") { printed().contains { $0.contains("#1 c>s Ping request") } }
            reply.signal()
        }
        #expect(Sockets.read(fd, s2c.count - 98) == Array(s2c[98...]))
        #expect(served.wait(timeout: .now() + 60) == .success, "the replay server did not finish")
        #expect(box.received == c2s, "the proxy changed the bytes")

        var lines: [String] = []
        try c.wait("the proxy printed both directions' frames") {
            lines = printed()
            return lines.contains { $0.contains("#1 c>s Ping request") } && lines.contains { $0.contains("#1 s>c Ping reply") }
        }
        #expect(lines.first?.hasPrefix("@0 #1 c>s noise handshake msg=1 len=48 e=") == true, "\(lines)")
        #expect(lines.contains("@0 #1 c>s Register request id=1 flags=END|C len=48 raw=24/24"), "\(lines)")
        #expect(!lines.contains { $0.contains("noise record") }, "\(lines)")
    }
}

/// Blocking loopback sockets for the replay server and client.
enum Sockets {
    struct Failed: Error, CustomStringConvertible { var description: String }

    static func address(_ port: UInt16) -> sockaddr_in {
        var a = sockaddr_in()
        a.sin_family = sa_family_t(AF_INET)
        a.sin_port = port.bigEndian
        a.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
        return a
    }

    static func listen() throws -> (Int32, UInt16) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var a = address(0)
        let ok = withUnsafePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } } == 0
        guard fd >= 0, ok, Glibc.listen(fd, 4) == 0 else { throw Failed(description: "cannot listen on 127.0.0.1: errno \(errno)") }
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        return (fd, UInt16(bigEndian: a.sin_port))
    }

    static func connect(port: UInt16) throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var a = address(port)
        let ok = withUnsafePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } } == 0
        guard fd >= 0, ok else { throw Failed(description: "cannot connect to 127.0.0.1:\(port): errno \(errno)") }
        setTimeout(fd)
        return fd
    }

    /// A receive deadline, so that a test that goes wrong fails instead of hanging.
    static func setTimeout(_ fd: Int32) {
        var timeout = timeval(tv_sec: 60, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    static func write(_ fd: Int32, _ bytes: [UInt8]) {
        var at = 0
        while at < bytes.count {
            let n = bytes[at...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { return }
            at += n
        }
    }

    /// Reads exactly `count` bytes, or fewer at end of stream or error.
    static func read(_ fd: Int32, _ count: Int) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        var at = 0
        while at < count {
            let n = out[at...].withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n <= 0 { break }
            at += n
        }
        return Array(out[0..<at])
    }
}

/// The whole chain with the real binaries: a node started with `--keylog-file` writes its
/// session secrets; `framedump proxy --keylog` in front of it decrypts what gossipctl and the
/// node say through it; without the key log the same traffic shows only as records.
@Suite(.serialized) struct RealNodeKeyLogTests {
    @Test func framedumpDecryptsARealNodesSessionWithItsKeyLog() throws {
        let c = try Cluster("keylog-real", secure: true)
        defer { c.shutdown(); try? FileManager.default.removeItem(atPath: c.dir) }
        let keylog = "\(c.dir)/node.keylog"
        let boot = try c.start(["bootstrap", "--listen", "127.0.0.1:0", "--arch", "64,32,10", "--seed", "1",
                                "--keylog-file", keylog])

        func proxy(_ name: String, keyLog: String?) throws -> (Process, String, () -> [String]) {
            let out = "\(c.dir)/\(name).out", ready = "\(c.dir)/\(name).ready"
            _ = FileManager.default.createFile(atPath: out, contents: nil)
            let p = Process()
            p.executableURL = URL(fileURLWithPath: Cluster.binary("framedump"))
            p.arguments = ["proxy", "--upstream", boot.endpoint.description, "--ready-file", ready] + (keyLog.map { ["--keylog", $0] } ?? [])
            p.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: out))
            p.standardError = FileHandle.nullDevice
            try p.run()
            var endpoint = ""
            try c.wait("framedump proxy \(name) listens") {
                endpoint = ((try? String(contentsOfFile: ready, encoding: .utf8)) ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
                return !endpoint.isEmpty
            }
            return (p, endpoint, { ((try? String(contentsOfFile: out, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init) })
        }

        let (withKeys, viaKeys, printedWithKeys) = try proxy("with-keys", keyLog: keylog)
        defer { kill(withKeys.processIdentifier, SIGKILL); withKeys.waitUntilExit() }
        let (code, out, err) = try c.ctl(["status", "--endpoint", viaKeys, "-o", "json"] + c.keyArgs)
        #expect(code == 0 && out.contains("\"role\":\"bootstrap\""), "\(err)")
        let logged = try String(contentsOfFile: keylog, encoding: .utf8)
        #expect(logged.hasPrefix("GOSSIP_NOISE_AESGCM "), "\(logged)")
        var lines: [String] = []
        try c.wait("the proxy decrypted the Status request and reply") {
            lines = printedWithKeys()
            return lines.contains { $0.contains("c>s Status request") } && lines.contains { $0.contains("s>c Status reply") }
        }
        #expect(lines.contains { $0.contains("noise handshake msg=1 len=48") }, "\(lines)")

        let (noKeys, viaNoKeys, printedNoKeys) = try proxy("no-keys", keyLog: nil)
        defer { kill(noKeys.processIdentifier, SIGKILL); noKeys.waitUntilExit() }
        let (code2, _, err2) = try c.ctl(["status", "--endpoint", viaNoKeys] + c.keyArgs)
        #expect(code2 == 0, "\(err2)")
        try c.wait("the proxy without a key log showed the records") {
            lines = printedNoKeys()
            return lines.contains { $0.contains("noise record") }
        }
        #expect(!lines.contains { $0.contains("Status") }, "without the key log nothing is decrypted: \(lines)")
    }
}
