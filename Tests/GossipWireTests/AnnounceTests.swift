// Announce (SPEC §5.11): the golden datagram decodes and re-encodes byte for byte, SPEC shows
// exactly its bytes, and every malformed datagram is refused with a typed error.
import Foundation
import Testing
@testable import GossipWire

private let datagramsDirectory = HexFile.vectorsDirectory.deletingLastPathComponent().appendingPathComponent("datagrams")

private let golden = Announcement(endpoint: "192.168.1.20:7000", identity: Array(1...32), servesModel: true,
                                  instance: 0x0123456789abcdef, sequence: 7, schemaHash: 0x25958d0cab31add1)

private func goldenBytes() throws -> [UInt8] {
    try HexFile.parse(String(contentsOf: datagramsDirectory.appendingPathComponent("announce.vector"), encoding: .utf8))
}

/// Recomputes the CRC-32 after editing a payload byte (so that only the edit is wrong).
private func withPayload(_ d: [UInt8], _ edit: (inout [UInt8]) -> Void) -> [UInt8] {
    var out = d
    var payload = Array(out[FrameHeader.size...])
    edit(&payload)
    out = Array(out[..<FrameHeader.size]) + payload
    let length = UInt32(out.count)
    for i in 0..<4 { out[i] = UInt8(truncatingIfNeeded: length >> (8 * UInt32(i))) }
    for i in 0..<4 { out[12 + i] = UInt8(truncatingIfNeeded: UInt32(payload.count) >> (8 * UInt32(i))); out[16 + i] = out[12 + i] }
    let crc = Checksum.crc32(payload)
    for i in 0..<4 { out[20 + i] = UInt8(truncatingIfNeeded: crc >> (8 * UInt32(i))) }
    return out
}

@Suite struct AnnounceTests {
    @Test func goldenDatagramRoundTrips() throws {
        let file = try goldenBytes()
        #expect(try golden.encodeDatagram() == file)
        #expect(try Announcement.decode(datagram: file) == golden)
        let plain = Announcement(endpoint: "0.0.0.0:9", identity: nil, servesModel: false, instance: 1, sequence: 1, schemaHash: 0)
        #expect(try Announcement.decode(datagram: plain.encodeDatagram()) == plain)
    }

    /// SPEC §5.11's text block shows every byte of the golden datagram.
    @Test func specShowsTheGoldenBytes() throws {
        let spec = try String(contentsOf: HexFile.vectorsDirectory.deletingLastPathComponent().appendingPathComponent("SPEC.md"), encoding: .utf8)
        let section = try #require(spec.range(of: "### 5.11 LAN discovery"))
        let rest = spec[section.upperBound...]
        let open = try #require(rest.range(of: "```text\n"))
        let close = try #require(rest[open.upperBound...].range(of: "```"))
        var bytes: [UInt8] = []
        for line in rest[open.upperBound..<close.lowerBound].split(separator: "\n") {
            // Hex pairs and "quoted" UTF-8 up to the first run of 3+ spaces (the comment).
            let content = line.components(separatedBy: "   ").first ?? ""
            var i = content.startIndex
            while i < content.endIndex {
                if content[i] == "\"" {
                    let end = content[content.index(after: i)...].firstIndex(of: "\"")!
                    bytes += Array(content[content.index(after: i)..<end].utf8)
                    i = content.index(after: end)
                } else if content[i] == " " {
                    i = content.index(after: i)
                } else {
                    let j = content.index(i, offsetBy: 2)
                    bytes.append(UInt8(content[i..<j], radix: 16)!)
                    i = j
                }
            }
        }
        #expect(bytes == (try goldenBytes()))
    }

    @Test func malformedDatagramsAreRefused() throws {
        let good = try goldenBytes()
        func kind(_ d: [UInt8]) -> WireError.Kind? {
            do { _ = try Announcement.decode(datagram: d); return nil } catch { return error.kind }
        }
        #expect(kind([]) == .frameTooShort)
        #expect(kind(Array(good.prefix(30))) == .lengthMismatch)
        #expect(kind(good + [0]) == .lengthMismatch)
        #expect(kind([UInt8](repeating: 0x41, count: 513)) == .frameTooLarge)
        var badCRC = good; badCRC[good.count - 1] ^= 1
        #expect(kind(badCRC) == .checksumMismatch)
        var otherType = good; otherType[6] = 5
        #expect(kind(otherType) == .unknownMessageType)
        var reply = good; reply[5] |= FrameFlags.response.rawValue
        #expect(kind(reply) == .invalidFlags)
        var version = good; version[4] = 3
        #expect(kind(version) == .unsupportedVersion)
        #expect(kind(withPayload(good) { $0[0] = 0x83 }) == .reservedNonZero)
        #expect(kind(withPayload(good) { $0.append(0) }) == .lengthMismatch)
        #expect(kind(withPayload(good) { $0.removeLast() }) == .truncated)
        #expect(kind(withPayload(good) { $0[1] = 0xff }) == .truncated)
    }

    @Test func anEndpointOverTheNameLimitIsRefusedOnEncode() {
        let long = Announcement(endpoint: String(repeating: "a", count: 260) + ":1", identity: Array(repeating: 1, count: 32),
                                servesModel: true, instance: 1, sequence: 1, schemaHash: 1)
        #expect(throws: WireError.self) { _ = try long.encodeDatagram() }
    }
}
