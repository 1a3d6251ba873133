// The handshake phase as a state machine without sockets (DESIGN.md §8): exact reads, strict
// lengths, plaintext detection, the wrong network key failing at message 3, a buffer that
// never exceeds 2 + 96 bytes.
import Testing
import GossipSecure
import GossipWire
@testable import GossipNet

@Suite struct ChannelHandshakeTests {
    let network = NetworkKey.generate()

    func pair(responderKey: NetworkKey? = nil) throws -> (ChannelHandshake, ChannelHandshake) {
        let i = try ChannelHandshake(role: .initiator, security: ChannelSecurity(networkKey: network, identity: .generate()))
        let r = try ChannelHandshake(role: .responder, security: ChannelSecurity(networkKey: responderKey ?? network, identity: .generate()))
        return (i, r)
    }

    @Test func completesAndNeverReadsPastAMessage() throws {
        var (i, r) = try pair()
        let m1 = try i.start()
        #expect(m1.count == 50 && m1[0] == 0 && m1[1] == 0x30)
        // Byte by byte: `wanted` never asks past the message.
        var outcome: ChannelHandshake.Outcome = .needMore
        for (k, b) in m1.enumerated() {
            #expect(r.wanted == (k < 2 ? 2 - k : m1.count - k), "the length prefix first, then exactly the message")
            outcome = [b].withUnsafeBytes { r.consume($0) }
            #expect(r.buffer.count <= ChannelHandshake.maxBuffer)
        }
        guard case .send(let m2) = outcome else { Issue.record("no message 2: \(outcome)"); return }
        #expect(m2.count == 98 && m2[1] == 0x60)
        guard case .verify(let rs) = feed(&i, m2) else { Issue.record("initiator did not verify"); return }
        #expect(rs.count == 32)
        let (m3, ti) = try i.finish()
        #expect(m3.count == 66 && m3[1] == 0x40)
        guard case .established(let tr) = feed(&r, m3) else { Issue.record("responder not established"); return }
        #expect(ti.handshakeHash == tr.handshakeHash)
        #expect(r.wanted == 0 && i.wanted == 0)
    }

    @Test func wrongNetworkKeyFailsAtMessage3() throws {
        var (i, r) = try pair(responderKey: .generate())
        guard case .send(let m2) = feed(&r, try i.start()) else { Issue.record("message 1 should pass (no PSK yet)"); return }
        guard case .verify = feed(&i, m2) else { Issue.record("message 2 should pass (no PSK yet)"); return }
        let (m3, _) = try i.finish()
        guard case .failed(.noise(let why)) = feed(&r, m3) else { Issue.record("message 3 must fail"); return }
        #expect(why.contains("handshake message 3 was refused"))
    }

    @Test func wrongLengthsAndPlaintextAreTold() throws {
        var (_, r) = try pair()
        // A plaintext frame header (ping_request.hex's first bytes).
        guard case .failed(.plaintextPeer) = feed(&r, [0x20, 0, 0, 0, 1, 0x30, 5, 0]) else { Issue.record("plaintext not detected"); return }
        (_, r) = try pair()
        guard case .failed(.malformed(let why)) = feed(&r, [0x00, 0x31, 1, 2, 3]) else { Issue.record("wrong length accepted"); return }
        #expect(why.contains("announced 49 bytes") && why.contains("exactly 48"))
        // The initiator refuses a message 2 of another length, and spots a plaintext node.
        var (i, _) = try pair()
        _ = try i.start()
        guard case .failed(.malformed) = feed(&i, [0x00, 0x61, 0, 0, 0]) else { Issue.record("wrong message 2 length accepted"); return }
        (i, _) = try pair()
        _ = try i.start()
        let plaintextError: [UInt8] = [0x50, 0, 0, 0, 1, 0x1C, 0xFF, 0xFF]
        guard case .failed(.plaintextPeer) = feed(&i, plaintextError) else { Issue.record("plaintext answer not detected"); return }
    }
}
