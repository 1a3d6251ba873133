// Encrypted gossip sessions made in memory for the inspector tests, exactly as contract A of
// issue 9 (SPEC §13) says a node sends them: GossipSecure's HandshakeState runs
// Noise_XXpsk3_25519_AESGCM_SHA256 (prologue "gossip/2", empty payloads, the network key as
// PSK) between fixed keys, Split() gives the transport, and each direction's plaintext frame
// stream is sealed into records (`u16be L` + ciphertext) with the sender rekeying after the
// record whose (n + 1) % 65536 == 0.
//
// The key log line is NOT taken from GossipSecure: `derivedKeys` recomputes the Split keys
// from the fixed keys with the Noise rev. 34 key schedule written out here (HKDF over
// HMAC-SHA256, X25519), so a test that decrypts with it cross-checks both the handshake and
// the contract's key log definition.
import Crypto
import Foundation
import GossipInspect
import GossipSecure

struct NoiseSession {
    /// The initiator's stream: `00 30` + message 1, `00 40` + message 3, records.
    var initiatorStream: [UInt8]
    /// The responder's stream: `00 60` + message 2, records.
    var responderStream: [UInt8]
    /// The key log entry of this session (independently derived).
    var keys: NoiseSessionKeys
    /// Offsets and lengths (after the prefix) of each direction's records.
    var initiatorRecords: [(offset: Int, length: Int)]
    var responderRecords: [(offset: Int, length: Int)]

    static let prologue = Array("gossip/2".utf8)
    static let noiseProtocol = NoiseProtocol.gossipChannel(cipher: .aesGCM)

    /// A fixed private key (seed 1...; never 0 so the clamp gives a valid key).
    static func key(_ seed: UInt8) -> Curve25519.KeyAgreement.PrivateKey {
        try! Curve25519.KeyAgreement.PrivateKey(rawRepresentation: (0..<32).map { UInt8(truncatingIfNeeded: Int(seed) &* 31 &+ $0 &* 7 &+ 1) })
    }

    /// Makes a session.
    /// - Parameters:
    ///   - up, down: the plaintext frame streams initiator->responder and back.
    ///   - upSizes, downSizes: plaintext bytes per record, used in turn (cycled).
    ///   - seed: varies every key of the session (two seeds: two different sessions).
    static func make(up: [UInt8], down: [UInt8], upSizes: [Int], downSizes: [Int], seed: UInt8 = 1,
                     networkKey: [UInt8] = Array(repeating: 0x5a, count: 32)) throws -> NoiseSession {
        let (si, ei, sr, er) = (key(seed), key(seed &+ 50), key(seed &+ 100), key(seed &+ 150))
        let psk = SymmetricKey(data: networkKey)
        var initiator = try HandshakeState(protocol: noiseProtocol, role: .initiator, prologue: prologue, s: si, e: ei, psks: [psk])
        var responder = try HandshakeState(protocol: noiseProtocol, role: .responder, prologue: prologue, s: sr, e: er, psks: [psk])
        let m1 = try initiator.writeMessage()
        _ = try responder.readMessage(m1.message)
        let m2 = try responder.writeMessage()
        _ = try initiator.readMessage(m2.message)
        let m3 = try initiator.writeMessage()
        let r3 = try responder.readMessage(m3.message)
        guard var ti = m3.transport, var tr = r3.transport else { throw SessionError("the handshake did not complete") }
        precondition(m1.message.count == 48 && m2.message.count == 96 && m3.message.count == 64)
        var upStream = [0x00, 0x30] + m1.message + [0x00, 0x40] + m3.message
        var downStream = [0x00, 0x60] + m2.message
        let upRecords = try seal(up, sizes: upSizes, with: &ti.sender, into: &upStream)
        let downRecords = try seal(down, sizes: downSizes, with: &tr.sender, into: &downStream)
        let keys = derivedKeys(si: si, ei: ei, sr: sr, er: er, psk: networkKey)
        precondition(keys.initiatorEphemeral == Array(m1.message[0..<32]))
        return NoiseSession(initiatorStream: upStream, responderStream: downStream, keys: keys,
                            initiatorRecords: upRecords, responderRecords: downRecords)
    }

    /// Seals `plaintext` into records of `sizes` bytes (cycled), appending them to `stream`.
    static func seal(_ plaintext: [UInt8], sizes: [Int], with cipher: inout CipherState, into stream: inout [UInt8]) throws -> [(offset: Int, length: Int)] {
        var at = 0, k = 0
        var records: [(offset: Int, length: Int)] = []
        while at < plaintext.count {
            let n = min(sizes[k % sizes.count], plaintext.count - at)
            k += 1
            let number = cipher.n
            let ct = try cipher.encryptWithAd([], Array(plaintext[at..<(at + n)]))
            if (number + 1) % 65536 == 0 { try cipher.rekey() }
            records.append((stream.count, ct.count))
            stream += [UInt8(ct.count >> 8), UInt8(ct.count & 0xff)] + ct
            at += n
        }
        return records
    }

    /// The Split() keys of Noise_XXpsk3_25519_AESGCM_SHA256 between these keys, by the Noise
    /// rev. 34 key schedule: only `ck` matters for Split, and it changes at each MixKey
    /// (e in messages 1 and 2 because the pattern has a psk; ee, es, se) and MixKeyAndHash(psk).
    static func derivedKeys(si: Curve25519.KeyAgreement.PrivateKey, ei: Curve25519.KeyAgreement.PrivateKey,
                            sr: Curve25519.KeyAgreement.PrivateKey, er: Curve25519.KeyAgreement.PrivateKey,
                            psk: [UInt8]) -> NoiseSessionKeys {
        func hmac(_ key: [UInt8], _ data: [UInt8]) -> [UInt8] {
            Array(HMAC<SHA256>.authenticationCode(for: data, using: SymmetricKey(data: key)))
        }
        func hkdf(_ ck: [UInt8], _ ikm: [UInt8], _ outputs: Int) -> [[UInt8]] {
            let temp = hmac(ck, ikm)
            var out: [[UInt8]] = [], previous: [UInt8] = []
            for i in 1...outputs { previous = hmac(temp, previous + [UInt8(i)]); out.append(previous) }
            return out
        }
        func dh(_ a: Curve25519.KeyAgreement.PrivateKey, _ b: Curve25519.KeyAgreement.PrivateKey) -> [UInt8] {
            try! a.sharedSecretFromKeyAgreement(with: b.publicKey).withUnsafeBytes { Array($0) }
        }
        let name = Array("Noise_XXpsk3_25519_AESGCM_SHA256".utf8)   // exactly 32 bytes: h = ck = name
        precondition(name.count == 32)
        var ck = name
        let eiPub = Array(ei.publicKey.rawRepresentation), erPub = Array(er.publicKey.rawRepresentation)
        for ikm in [eiPub, erPub, dh(ei, er), dh(ei, sr), dh(si, er)] { ck = hkdf(ck, ikm, 2)[0] }
        ck = hkdf(ck, psk, 3)[0]
        let split = hkdf(ck, [], 2)
        return NoiseSessionKeys(initiatorEphemeral: eiPub, initiatorToResponder: split[0], responderToInitiator: split[1])
    }

    struct SessionError: Error, CustomStringConvertible {
        var description: String
        init(_ d: String) { description = d }
    }
}

/// A Curve25519 private key from 64 hex digits.
func privateKey(hex: String) throws -> Curve25519.KeyAgreement.PrivateKey {
    let d = Array(hex.utf8)
    func v(_ c: UInt8) -> UInt8 { c <= 57 ? c - 48 : c - 87 }
    return try Curve25519.KeyAgreement.PrivateKey(rawRepresentation: stride(from: 0, to: d.count, by: 2).map { v(d[$0]) << 4 | v(d[$0 + 1]) })
}
