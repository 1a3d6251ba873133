// CipherState, SymmetricState and HandshakeState beyond the vectors: tampering, wrong PSKs,
// nonce exhaustion, Rekey as the spec defines it, hostile handshake input, and misuse.
import Crypto
import Foundation
import Testing
@testable import GossipSecure

/// Two fresh identities and a network key, and the XXpsk3 handshake between them.
struct Pair {
    let cipher: NoiseCipher
    let initiatorIdentity = IdentityKey.generate()
    let responderIdentity = IdentityKey.generate()
    let networkKey = NetworkKey.generate()

    func states(initiatorPSK: NetworkKey? = nil, pattern: HandshakePattern = .xxpsk3) throws -> (HandshakeState, HandshakeState) {
        let proto = NoiseProtocol(pattern: pattern, cipher: cipher)
        let ipsk = Array(repeating: (initiatorPSK ?? networkKey).symmetricKey, count: pattern.pskCount)
        let rpsk = Array(repeating: networkKey.symmetricKey, count: pattern.pskCount)
        return (try HandshakeState(protocol: proto, role: .initiator, prologue: Array("gossip".utf8), s: initiatorIdentity.privateKey,
                                   rs: pattern.responderPreMessage.contains(.s) ? responderIdentity.privateKey.publicKey : nil, psks: ipsk),
                try HandshakeState(protocol: proto, role: .responder, prologue: Array("gossip".utf8), s: responderIdentity.privateKey, psks: rpsk))
    }

    /// Runs the whole handshake; returns (initiator, responder) transports.
    func handshake() throws -> (NoiseTransport, NoiseTransport) {
        var (i, r) = try states()
        let m1 = try i.writeMessage(payload: Array("hello".utf8))
        _ = try r.readMessage(m1.message)
        let m2 = try r.writeMessage()
        _ = try i.readMessage(m2.message)
        let m3 = try i.writeMessage()
        let last = try r.readMessage(m3.message)
        return (try #require(m3.transport), try #require(last.transport))
    }
}

func flipped(_ bytes: [UInt8], at index: Int, mask: UInt8 = 0x01) -> [UInt8] {
    var b = bytes
    b[index] ^= mask
    return b
}

@Suite struct NoiseStateTests {
    @Test(arguments: NoiseCipher.allCases)
    func xxpsk3HandshakeAuthenticatesBothIdentities(cipher: NoiseCipher) throws {
        let pair = Pair(cipher: cipher)
        var (it, rt) = try pair.handshake()
        #expect(it.remoteStaticKey == pair.responderIdentity.publicKey)
        #expect(rt.remoteStaticKey == pair.initiatorIdentity.publicKey)
        #expect(it.handshakeHash == rt.handshakeHash)
        for n in 0..<5 {
            let a = Array("ping \(n)".utf8), b = Array("pong \(n)".utf8)
            #expect(try rt.decrypt(it.encrypt(a)) == a)
            #expect(try it.decrypt(rt.encrypt(b)) == b)
        }
        #expect(it.sender.n == 5 && rt.receiver.n == 5)
    }

    /// Any flipped byte of any handshake message fails that very message (XXpsk3 encrypts and
    /// authenticates every payload, even in message 1, because "e" does MixKey there).
    @Test(arguments: NoiseCipher.allCases)
    func flippedByteInAnyHandshakeMessageFails(cipher: NoiseCipher) throws {
        let pair = Pair(cipher: cipher)
        for message in 0..<3 {
            var (i, r) = try pair.states()
            var pending = try i.writeMessage(payload: Array("first".utf8)).message
            var writerIsInitiator = true
            for _ in 0..<message {
                if writerIsInitiator { _ = try r.readMessage(pending); pending = try r.writeMessage(payload: [1, 2, 3]).message }
                else { _ = try i.readMessage(pending); pending = try i.writeMessage(payload: [4, 5]).message }
                writerIsInitiator.toggle()
            }
            for index in pending.indices {
                for mask: UInt8 in [0x01, 0x80] {
                    var reader = writerIsInitiator ? r : i
                    #expect(throws: NoiseError.self, "message \(message + 1), byte \(index) ^ \(mask) was accepted") {
                        _ = try reader.readMessage(flipped(pending, at: index, mask: mask))
                    }
                    #expect(reader.nextStep == .failed)
                }
            }
            var reader = writerIsInitiator ? r : i
            _ = try reader.readMessage(pending)  // the unaltered message still passes
        }
    }

    /// Plain XX has no key in message 1, so a flipped byte there is accepted by the responder
    /// but changes `h`: the handshake then fails at message 2, which the initiator cannot
    /// decrypt. (XXpsk3 catches it one message earlier; see above.)
    @Test(arguments: NoiseCipher.allCases)
    func xxWithoutPSKCatchesAFlipInMessage1AtMessage2(cipher: NoiseCipher) throws {
        let pair = Pair(cipher: cipher)
        let (i0, r0) = try pair.states(pattern: .xx)
        var i1 = i0
        let m1 = try i1.writeMessage(payload: Array("first".utf8)).message
        for index in m1.indices {
            var i = i1, r = r0
            let tampered = flipped(m1, at: index)
            let payload = try r.readMessage(tampered).payload  // no key yet: accepted
            #expect(payload == Array(tampered.dropFirst(32)))
            let m2 = try r.writeMessage().message
            expectNoise(.decryptFailed, "XX message 1 byte \(index) flipped") { _ = try i.readMessage(m2) }
        }
    }

    @Test(arguments: NoiseCipher.allCases)
    func flippedByteInATransportMessageFailsAndLeavesTheNonce(cipher: NoiseCipher) throws {
        var (it, rt) = try Pair(cipher: cipher).handshake()
        let plain = Array((0..<100).map { UInt8($0) })
        let sealed = try it.encrypt(plain)
        #expect(sealed.count == plain.count + 16)
        for index in sealed.indices {
            let copy = rt
            var attempt = rt
            expectNoise(.decryptFailed) { _ = try attempt.decrypt(flipped(sealed, at: index)) }
            #expect(attempt.receiver.n == copy.receiver.n, "a failed decryption must not advance the nonce")
        }
        #expect(throws: NoiseError.self) { var a = rt; _ = try a.decrypt(Array(sealed.dropLast())) }
        #expect(throws: NoiseError.self) { var a = rt; _ = try a.decrypt(Array(sealed.prefix(15))) }
        #expect(try rt.decrypt(sealed) == plain)
        // Replaying the same record fails: the receiver's nonce moved on.
        #expect(throws: NoiseError.self) { _ = try rt.decrypt(sealed) }
    }

    /// XXpsk3 mixes the PSK in message 3, NNpsk0 in message 1, IKpsk2 in message 2: a wrong
    /// PSK is accepted up to that message and fails exactly there.
    @Test(arguments: [(HandshakePattern.xxpsk3, 2), (HandshakePattern.nnpsk0, 0), (HandshakePattern.ikpsk2, 1)])
    func wrongPSKFailsAtTheFirstMessageThatUsesIt(pattern: HandshakePattern, failing: Int) throws {
        for cipher in NoiseCipher.allCases {
            let pair = Pair(cipher: cipher)
            var (i, r) = try pair.states(initiatorPSK: NetworkKey.generate(), pattern: pattern)
            for index in 0..<pattern.messages.count {
                let initiatorWrites = index % 2 == 0
                let message = initiatorWrites ? try i.writeMessage(payload: [9]).message : try r.writeMessage(payload: [9]).message
                if index < failing {
                    if initiatorWrites { _ = try r.readMessage(message) } else { _ = try i.readMessage(message) }
                } else {
                    expectNoise(.decryptFailed, "\(pattern.name) message \(index + 1) with a wrong PSK") {
                        if initiatorWrites { _ = try r.readMessage(message) } else { _ = try i.readMessage(message) }
                    }
                    #expect((initiatorWrites ? r : i).nextStep == .failed)
                    break
                }
            }
        }
    }

    @Test func xxpsk3MessageLengthsBoundTheHandshake() throws {
        // -> e (payload encrypted: "e" does MixKey in PSK patterns); <- e, ee, s, es; -> s, se, psk.
        #expect(HandshakePattern.xxpsk3.messageLength(0, payloadLength: 0) == 48)
        #expect(HandshakePattern.xxpsk3.messageLength(1, payloadLength: 0) == 96)
        #expect(HandshakePattern.xxpsk3.messageLength(2, payloadLength: 0) == 64)
        #expect(HandshakePattern.xx.messageLength(0, payloadLength: 5) == 37)  // no key yet: plaintext payload
        var (i, r) = try Pair(cipher: .aesGCM).states()
        let m1 = try i.writeMessage(payload: [1, 2, 3]).message
        #expect(m1.count == HandshakePattern.xxpsk3.messageLength(0, payloadLength: 3))
        _ = try r.readMessage(m1)
        #expect(try r.writeMessage(payload: [4]).message.count == HandshakePattern.xxpsk3.messageLength(1, payloadLength: 1))
    }

    /// No state value exposes a key through description, debugDescription or reflection.
    @Test func statesNeverPrintKeys() throws {
        let pair = Pair(cipher: .aesGCM)
        var (i, r) = try pair.states()
        _ = try r.readMessage(i.writeMessage().message)
        let m2 = try r.writeMessage()
        _ = try i.readMessage(m2.message)
        let m3 = try i.writeMessage()
        let (it, rt) = (try #require(m3.transport), try #require(r.readMessage(m3.message).transport))
        func holdsSecret(_ value: Any, depth: Int = 0) -> Bool {
            if value is SymmetricKey || value is Curve25519.KeyAgreement.PrivateKey || value is SharedSecret { return true }
            guard depth < 8 else { return false }
            return Mirror(reflecting: value).children.contains { holdsSecret($0.value, depth: depth + 1) }
        }
        let secrets = [NoiseHash.bytes(pair.networkKey.symmetricKey), Array(pair.initiatorIdentity.privateKey.rawRepresentation),
                       Array(pair.responderIdentity.privateKey.rawRepresentation)].map { Hex.encode($0.prefix(8)) }
        for value in [i, r, it, rt, it.sender, rt.receiver, pair.networkKey, pair.initiatorIdentity] as [Any] {
            #expect(!holdsSecret(value), "\(type(of: value)) reflects a key")
            var dumped = ""
            dump(value, to: &dumped)
            for text in [String(describing: value), String(reflecting: value), dumped] {
                #expect(!secrets.contains { text.contains($0) }, "\(text)")
            }
        }
        #expect("\(it.sender)".contains("<redacted>"))
    }

    /// A hostile first message with a low-order ephemeral key (here the all-zero point, whose
    /// payload an outsider can encrypt: XXpsk3 mixes the PSK only in message 3) is refused
    /// at the first DH with it, never a crash and never a zero shared secret.
    @Test(arguments: NoiseCipher.allCases)
    func lowOrderEphemeralKeyIsRefused(cipher: NoiseCipher) throws {
        let proto = NoiseProtocol.gossipChannel(cipher: cipher)
        for point in [[UInt8](repeating: 0, count: 32), [1] + [UInt8](repeating: 0, count: 31)] {
            var forger = SymmetricState(protocolName: proto.name, cipher: cipher)
            forger.mixHash(Array("gossip".utf8))
            forger.mixHash(point)
            forger.mixKey(point)
            let message = point + (try forger.encryptAndHash([]))
            var (_, r) = try Pair(cipher: cipher).states()
            _ = try r.readMessage(message)
            expectNoise(.invalidPublicKey) { _ = try r.writeMessage() }
            #expect(r.nextStep == .failed)
        }
    }

    @Test func wrongPrologueFailsTheHandshake() throws {
        let pair = Pair(cipher: .aesGCM)
        let proto = NoiseProtocol.gossipChannel(cipher: .aesGCM)
        var i = try HandshakeState(protocol: proto, role: .initiator, prologue: [1], s: pair.initiatorIdentity.privateKey, psks: [pair.networkKey.symmetricKey])
        var r = try HandshakeState(protocol: proto, role: .responder, prologue: [2], s: pair.responderIdentity.privateKey, psks: [pair.networkKey.symmetricKey])
        #expect(throws: NoiseError.self) { _ = try r.readMessage(i.writeMessage().message) }
    }

    @Test(arguments: NoiseCipher.allCases)
    func hostileHandshakeInputIsRefusedCleanly(cipher: NoiseCipher) throws {
        let pair = Pair(cipher: cipher)
        var (i, r) = try pair.states()
        let m1 = try i.writeMessage().message
        #expect(m1.count == 32 + 16)
        // Every truncation of message 1 fails cleanly.
        for n in 0..<m1.count {
            var reader = r
            #expect(throws: NoiseError.self) { _ = try reader.readMessage(Array(m1.prefix(n))) }
        }
        // Too large, empty, random.
        var reader = r
        expectNoise(.messageTooLarge) { _ = try reader.readMessage([UInt8](repeating: 0, count: 65536)) }
        reader = r
        expectNoise(.truncated) { _ = try reader.readMessage([]) }
        var rng = SystemRandomNumberGenerator()
        for n in [1, 31, 32, 47, 48, 49, 200, 65535] {
            reader = r
            #expect(throws: NoiseError.self) { _ = try reader.readMessage((0..<n).map { _ in UInt8.random(in: 0...255, using: &rng) }) }
        }
        // The genuine message after all that (on the untouched state) still passes.
        _ = try r.readMessage(m1)
        // Message 2 truncated at every length fails at the initiator.
        let m2 = try r.writeMessage().message
        for n in 0..<m2.count {
            var reader = i
            #expect(throws: NoiseError.self) { _ = try reader.readMessage(Array(m2.prefix(n))) }
        }
    }

    @Test func stepsOutOfOrderThrowAndFailedStaysFailed() throws {
        var (i, r) = try Pair(cipher: .chaChaPoly).states()
        #expect(i.nextStep == .write && r.nextStep == .read)
        expectNoise(.outOfOrder) { _ = try r.writeMessage() }
        expectNoise(.outOfOrder) { _ = try i.readMessage([]) }
        let m1 = try i.writeMessage().message
        #expect(throws: NoiseError.self) { _ = try r.readMessage(flipped(m1, at: 40)) }
        #expect(r.nextStep == .failed)
        expectNoise(.outOfOrder) { _ = try r.readMessage(m1) }
        expectNoise(.outOfOrder) { _ = try r.writeMessage() }
    }

    @Test func completedHandshakeRefusesMoreMessages() throws {
        let pair = Pair(cipher: .aesGCM)
        var (i, r) = try pair.states()
        _ = try r.readMessage(i.writeMessage().message)
        _ = try i.readMessage(r.writeMessage().message)
        _ = try r.readMessage(i.writeMessage().message)
        #expect(i.nextStep == .complete && r.nextStep == .complete)
        expectNoise(.outOfOrder) { _ = try i.writeMessage() }
        expectNoise(.outOfOrder) { _ = try r.readMessage([]) }
    }

    @Test func configurationIsChecked() throws {
        let proto = NoiseProtocol.gossipChannel(cipher: .aesGCM)
        let id = IdentityKey.generate()
        expectNoise(.invalidConfiguration) { _ = try HandshakeState(protocol: proto, role: .initiator, s: id.privateKey) }
        expectNoise(.invalidConfiguration) {
            _ = try HandshakeState(protocol: proto, role: .initiator, psks: [SymmetricKey(size: .bits256)])
        }
        expectNoise(.invalidConfiguration) {
            _ = try HandshakeState(protocol: proto, role: .initiator, s: id.privateKey, psks: [SymmetricKey(size: .bits128)])
        }
        expectNoise(.invalidConfiguration) {
            _ = try HandshakeState(protocol: NoiseProtocol(pattern: .ik, cipher: .aesGCM), role: .initiator, s: id.privateKey)
        }
        expectNoise(.unsupportedProtocol) { _ = try NoiseProtocol(name: "Noise_XXpsk3_448_AESGCM_SHA256") }
        expectNoise(.unsupportedProtocol) { _ = try NoiseProtocol(name: "Noise_KK_25519_AESGCM_SHA256") }
        expectNoise(.unsupportedProtocol) { _ = try NoiseProtocol(name: "Noise_XX_25519_AESGCM_BLAKE2s") }
        #expect(try NoiseProtocol(name: "Noise_XXpsk3_25519_ChaChaPoly_SHA256") == .gossipChannel(cipher: .chaChaPoly))
    }

    @Test func transportRefusesOversizedMessages() throws {
        var (it, rt) = try Pair(cipher: .aesGCM).handshake()
        let max = try it.encrypt([UInt8](repeating: 7, count: NoiseTransport.maxPlaintextLength))
        #expect(max.count == 65535)
        #expect(try rt.decrypt(max).count == 65519)
        expectNoise(.messageTooLarge) { _ = try it.encrypt([UInt8](repeating: 7, count: 65520)) }
        expectNoise(.messageTooLarge) { _ = try rt.decrypt([UInt8](repeating: 7, count: 65536)) }
    }
}

/// Expects `body` to throw a `NoiseError` of `kind`.
func expectNoise(_ kind: NoiseError.Kind, _ comment: Comment? = nil, sourceLocation: SourceLocation = #_sourceLocation,
                 _ body: () throws -> Void) {
    let error = #expect(throws: NoiseError.self, comment, sourceLocation: sourceLocation) { try body() }
    #expect(error?.kind == kind, "expected \(kind), got \(String(describing: error))", sourceLocation: sourceLocation)
}
