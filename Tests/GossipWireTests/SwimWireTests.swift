// The SWIM bodies and datagrams (SPEC §5.10): round trips, the golden vectors through the
// datagram codec, and hostile datagrams refused with a typed error (never a trap).
import Testing
@testable import GossipWire

@Suite struct SwimWireTests {
    static let body = SwimBody(sender: "127.0.0.1:7001", incarnation: 2, target: "127.0.0.1:7002",
                               updates: [SwimWireUpdate(status: 1, incarnation: 1, member: "127.0.0.1:7003")])

    @Test func datagramsRoundTripAllFourKinds() throws {
        for b in [MessageBody.probe(Self.body), .probeAck(Self.body), .indirectProbe(Self.body), .indirectProbeAck(Self.body)] {
            let d = try SwimDatagram.encode(b, seq: 0xdead_beef)
            let (back, seq) = try SwimDatagram.decode(d)
            #expect(back == b && seq == 0xdead_beef)
            #expect(d.count == FrameHeader.size + Self.body.encodedSize)
        }
    }

    @Test func goldenVectorsAreSwimDatagrams() throws {
        for name in ["probe_request", "probe_request_indirect"] {
            let spec = Fixtures.specs.first { $0.name == name }!
            let bytes = try spec.encode()
            #expect(try SwimDatagram.encode(spec.body, seq: spec.requestID) == bytes, "\(name): one frame, checksummed")
            #expect(try SwimDatagram.decode(bytes).body == spec.body)
        }
    }

    @Test func refusesHostileDatagrams() throws {
        let good = try SwimDatagram.encode(.probe(Self.body), seq: 1)
        func refused(_ d: [UInt8], _ code: WireError.Kind, _ why: String) {
            do {
                _ = try SwimDatagram.decode(d)
                Issue.record("accepted: \(why)")
            } catch let e as WireError {
                #expect(e.kind == code, "\(why): \(e)")
            } catch {
                Issue.record("\(why): not a WireError: \(error)")
            }
        }
        refused([], .frameTooShort, "empty")
        refused(Array(good[0..<23]), .frameTooShort, "short header")
        refused(good + [0], .lengthMismatch, "trailing byte after the frame")
        refused(Array(repeating: 0, count: 1401), .frameTooLarge, "over 1400 bytes")
        var bad = good
        bad[bad.count - 1] ^= 1
        refused(bad, .checksumMismatch, "flipped payload bit")
        bad = good
        bad[5] |= 0x01   // COMPRESSED
        refused(bad, .invalidFlags, "compressed flag")
        bad = good
        bad[5] &= ~0x10  // END_STREAM cleared
        refused(bad, .invalidFlags, "not END_STREAM")
        bad = good
        bad[5] |= 0x0c   // RESPONSE | ERROR
        refused(bad, .invalidFlags, "an error reply")
        bad = good
        bad[6] = 5       // Ping
        refused(bad, .unknownMessageType, "a Ping in a datagram")
        // A body with a status past 2, and one with 65 updates, and a sender over 255 bytes.
        var evil = Self.body
        evil.updates[0].status = 3
        #expect(throws: WireError.self) { _ = try evil.encode() }
        let raw = try Self.body.encode().array
        var patched = raw
        let statusAt = 2 + 14 + 4 + 2 + 14 + 1
        #expect(patched[statusAt] == 1)
        patched[statusAt] = 3
        #expect(throws: WireError.self) { _ = try SwimBody.decode(ByteSlice(ByteStorage(copying: patched))) }
        patched = raw
        patched[statusAt - 1] = 65
        #expect(throws: WireError.self) { _ = try SwimBody.decode(ByteSlice(ByteStorage(copying: patched))) }
        patched = raw
        patched[0] = 0x00; patched[1] = 0x01   // sender length 256
        #expect(throws: WireError.self) { _ = try SwimBody.decode(ByteSlice(ByteStorage(copying: patched))) }
        var long = Self.body
        long.sender = String(repeating: "a", count: 256)
        #expect(throws: WireError.self) { _ = try long.encode() }
        // Every truncation of a valid datagram is refused.
        for n in 0..<good.count { #expect(throws: WireError.self) { _ = try SwimDatagram.decode(Array(good[0..<n])) } }
    }

    @Test func aFullBodyFitsTheDatagramLimit() throws {
        // The node's default budget: ids of 255 bytes, 800 bytes of updates (SwimConfig), sealed (+36).
        let id = String(repeating: "h", count: 249) + ":65535"
        var b = SwimBody(sender: id, incarnation: 1, target: id, updates: [])
        while b.encodedSize + 5 + 2 + 21 <= 2 + 255 + 4 + 2 + 255 + 1 + 800 {
            b.updates.append(SwimWireUpdate(status: 0, incarnation: 0, member: "127.0.0.1:65535"))
        }
        let d = try SwimDatagram.encode(.probe(b), seq: 1)
        #expect(d.count + 36 <= SwimBody.maxDatagramBytes)
    }
}
