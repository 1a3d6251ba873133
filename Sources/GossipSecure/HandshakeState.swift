// HandshakeState of the Noise Protocol Framework, revision 34, section 5.3, with the PSK rules
// of section 9, as a value-type state machine (DESIGN.md §8): each step takes the bytes that
// arrived or the payload to send and returns what to send or what was received. No sockets,
// no clocks: the connection that owns the socket performs the result and owns the deadline.
import Crypto
import Foundation

/// Noise's DH function 25519 (§12.1) on swift-crypto's Curve25519.KeyAgreement.
enum NoiseDH {
    static let dhLength = 32

    /// DH(private, public) of §4.1. swift-crypto returns the all-zero result of a low-order
    /// public key without complaint; we refuse it (§12.1 allows either).
    static func dh(_ privateKey: Curve25519.KeyAgreement.PrivateKey, _ publicKey: Curve25519.KeyAgreement.PublicKey) throws(NoiseError) -> [UInt8] {
        let shared: [UInt8]
        do {
            shared = try privateKey.sharedSecretFromKeyAgreement(with: publicKey).withUnsafeBytes { [UInt8]($0) }
        } catch {
            throw NoiseError(.invalidPublicKey, "the peer's Curve25519 public key gives no shared secret (\(error)): refuse the peer")
        }
        guard !constantTimeEqual(shared, [UInt8](repeating: 0, count: dhLength)) else {
            throw NoiseError(.invalidPublicKey, "the peer's Curve25519 public key is a low-order point (all-zero shared secret): the peer is hostile or broken; refuse it")
        }
        return shared
    }

    static func publicKey(_ bytes: [UInt8], what: String) throws(NoiseError) -> Curve25519.KeyAgreement.PublicKey {
        do {
            return try Curve25519.KeyAgreement.PublicKey(rawRepresentation: bytes)
        } catch {
            throw NoiseError(.invalidPublicKey, "\(what) is not a 32-byte Curve25519 public key (\(bytes.count) bytes)")
        }
    }
}

/// The two cipher states after a completed handshake (Noise §5.2 Split), oriented for one
/// side: `sender` encrypts what this side sends, `receiver` decrypts what it receives.
///
/// Invariant: each direction's nonce only increases, so no nonce is used twice with one key;
/// a transport message is at most 65535 bytes (§3), so a plaintext at most 65519.
public struct NoiseTransport: Sendable {
    /// The largest Noise message (§3).
    public static let maxMessageLength = 65535
    /// The largest plaintext one transport message can carry (65535 - 16-byte tag).
    public static let maxPlaintextLength = maxMessageLength - NoiseCipher.tagLength

    /// Encrypts what this side sends.
    public var sender: CipherState
    /// Decrypts what this side receives.
    public var receiver: CipherState
    /// GetHandshakeHash() at the end of the handshake: a public channel-binding value.
    public let handshakeHash: [UInt8]
    /// The peer's static public key (32 bytes) when the pattern transmitted or pre-shared one.
    public let remoteStaticKey: [UInt8]?

    /// Seals one transport message.
    /// - Throws: `.messageTooLarge` past `maxPlaintextLength`; `.nonceExhausted`.
    public mutating func encrypt(_ plaintext: [UInt8], ad: [UInt8] = []) throws(NoiseError) -> [UInt8] {
        guard plaintext.count <= Self.maxPlaintextLength else {
            throw NoiseError(.messageTooLarge, "a transport plaintext of \(plaintext.count) bytes exceeds \(Self.maxPlaintextLength) (Noise messages are at most 65535 bytes): split it across records")
        }
        return try sender.encryptWithAd(ad, plaintext)
    }

    /// Opens one transport message.
    /// - Throws: `.messageTooLarge` past 65535 bytes; `.decryptFailed` when it was altered or
    ///   sealed with another key; `.nonceExhausted`.
    public mutating func decrypt(_ ciphertext: [UInt8], ad: [UInt8] = []) throws(NoiseError) -> [UInt8] {
        guard ciphertext.count <= Self.maxMessageLength else {
            throw NoiseError(.messageTooLarge, "a transport message of \(ciphertext.count) bytes exceeds the Noise limit of 65535: the peer is broken or hostile; close the connection")
        }
        return try receiver.decryptWithAd(ad, ciphertext)
    }

    /// Seals one transport message, appending it to a caller-owned buffer (no allocation when
    /// `out` has capacity: the record layer's fast path). Without associated data.
    /// - Throws: as `encrypt(_:ad:)`; when it throws, `out` is unchanged.
    public mutating func encrypt(_ plaintext: UnsafeRawBufferPointer, appendingTo out: inout [UInt8]) throws(NoiseError) {
        guard plaintext.count <= Self.maxPlaintextLength else {
            throw NoiseError(.messageTooLarge, "a transport plaintext of \(plaintext.count) bytes exceeds \(Self.maxPlaintextLength) (Noise messages are at most 65535 bytes): split it across records")
        }
        try sender.encryptWithAd(UnsafeRawBufferPointer(start: nil, count: 0), plaintext, appendingTo: &out)
    }

    /// Opens one transport message, appending the plaintext to a caller-owned buffer.
    /// - Throws: as `decrypt(_:ad:)`; when it throws, `out` and the nonce are unchanged.
    public mutating func decrypt(_ ciphertext: UnsafeRawBufferPointer, appendingTo out: inout [UInt8]) throws(NoiseError) {
        guard ciphertext.count <= Self.maxMessageLength else {
            throw NoiseError(.messageTooLarge, "a transport message of \(ciphertext.count) bytes exceeds the Noise limit of 65535: the peer is broken or hostile; close the connection")
        }
        try receiver.decryptWithAd(UnsafeRawBufferPointer(start: nil, count: 0), ciphertext, appendingTo: &out)
    }
}

/// The Noise `HandshakeState` (revision 34, §5.3) for the patterns in `HandshakePattern`.
///
/// A value-type state machine: `writeMessage` returns the bytes to send, `readMessage` the
/// payload that arrived, and the step that finishes the handshake also returns the
/// `NoiseTransport`. `nextStep` says what the owner must do next. Any error moves the machine
/// to `.failed` for good (Noise: abort the handshake); further calls throw `.outOfOrder`.
///
/// Tokens follow §5.3; in PSK patterns each "e" token also does MixKey(e.public_key) (§9.2).
public struct HandshakeState: Sendable {
    /// Which side of the handshake this is.
    public enum Role: String, Sendable, Equatable { case initiator, responder }

    /// What the owner must do next.
    public enum Step: Sendable, Equatable {
        /// Call `writeMessage` and send the bytes it returns.
        case write
        /// Wait for one handshake message and pass it to `readMessage`.
        case read
        /// The handshake finished; use the `NoiseTransport` that the last step returned.
        case complete
        /// The handshake failed; close the connection.
        case failed
    }

    private enum State: Sendable {
        case active(messageIndex: Int)
        case complete
        case failed
    }

    /// The protocol being run.
    public let noiseProtocol: NoiseProtocol
    /// This side's role.
    public let role: Role
    private var state: State
    private var symmetric: SymmetricState
    private var s: Curve25519.KeyAgreement.PrivateKey?
    private var e: Curve25519.KeyAgreement.PrivateKey?
    private var rs: Curve25519.KeyAgreement.PublicKey?
    private var re: Curve25519.KeyAgreement.PublicKey?
    private let psks: [SymmetricKey]
    private var pskIndex = 0

    /// Initialize(handshake_pattern, initiator, prologue, s, e, rs, re, psk) of §5.3.
    ///
    /// - Parameters:
    ///   - prologue: bytes both sides must agree on (mixed into `h`; a mismatch fails the
    ///     first authenticated message).
    ///   - s: this side's static key pair, required when the pattern sends or pre-shares it.
    ///   - e: a fixed ephemeral key, for test vectors only; nil (the default) generates a
    ///     fresh one when the "e" token is written. Never reuse an ephemeral key.
    ///   - rs: the peer's static public key, required when the peer pre-shares it (IK).
    ///   - re: the peer's ephemeral public key (for pre-message "e"; unused by our patterns).
    ///   - psks: one 32-byte key per "psk" token, in order (the gossip network key for XXpsk3).
    /// - Throws: `.invalidConfiguration` when a required key is missing or a PSK is not 32 bytes.
    public init(
        protocol noiseProtocol: NoiseProtocol,
        role: Role,
        prologue: [UInt8] = [],
        s: Curve25519.KeyAgreement.PrivateKey? = nil,
        e: Curve25519.KeyAgreement.PrivateKey? = nil,
        rs: Curve25519.KeyAgreement.PublicKey? = nil,
        re: Curve25519.KeyAgreement.PublicKey? = nil,
        psks: [SymmetricKey] = []
    ) throws(NoiseError) {
        let pattern = noiseProtocol.pattern
        let name = noiseProtocol.name
        guard psks.count == pattern.pskCount else {
            throw NoiseError(.invalidConfiguration, "\(name) needs \(pattern.pskCount) pre-shared key(s), got \(psks.count): pass the network key")
        }
        for psk in psks where psk.bitCount != 256 {
            throw NoiseError(.invalidConfiguration, "a Noise pre-shared key must be 32 bytes, got \(psk.bitCount / 8): check the network key file")
        }
        let initiator = role == .initiator
        let mine = { (i: Int) in (i % 2 == 0) == initiator }
        let sendsS = pattern.messages.indices.contains { mine($0) && pattern.messages[$0].contains(.s) }
        let ownPre = initiator ? pattern.initiatorPreMessage : pattern.responderPreMessage
        let peerPre = initiator ? pattern.responderPreMessage : pattern.initiatorPreMessage
        if (sendsS || ownPre.contains(.s)) && s == nil {
            throw NoiseError(.invalidConfiguration, "\(name) as \(role.rawValue) needs this node's static (identity) key")
        }
        if peerPre.contains(.s) && rs == nil {
            throw NoiseError(.invalidConfiguration, "\(name) as \(role.rawValue) needs the peer's static public key in advance")
        }
        if ownPre.contains(.e) && e == nil || peerPre.contains(.e) && re == nil {
            throw NoiseError(.invalidConfiguration, "\(name) has an ephemeral pre-message: pass e and re")
        }
        self.noiseProtocol = noiseProtocol
        self.role = role
        self.s = s
        self.e = e
        self.rs = rs
        self.re = re
        self.psks = psks
        self.state = .active(messageIndex: 0)
        symmetric = SymmetricState(protocolName: name, cipher: noiseProtocol.cipher)
        symmetric.mixHash(prologue)
        // Pre-messages: the initiator's public keys first, then the responder's (§7.1).
        let initiatorKeys = (s: initiator ? s?.publicKey : rs, e: initiator ? e?.publicKey : re)
        let responderKeys = (s: initiator ? rs : s?.publicKey, e: initiator ? re : e?.publicKey)
        for (pre, keys) in [(pattern.initiatorPreMessage, initiatorKeys), (pattern.responderPreMessage, responderKeys)] {
            for token in pre {
                let key = token == .e ? keys.e! : keys.s!
                symmetric.mixHash(Array(key.rawRepresentation))
                if token == .e && pattern.isPSK { symmetric.mixKey(Array(key.rawRepresentation)) }
            }
        }
    }

    /// What the owner must do next.
    public var nextStep: Step {
        switch state {
        case .active(let i): (i % 2 == 0) == (role == .initiator) ? .write : .read
        case .complete: .complete
        case .failed: .failed
        }
    }

    /// GetHandshakeHash(): the current `h`.
    public var handshakeHash: [UInt8] { symmetric.handshakeHash }

    /// The peer's static public key once it has been received (or was pre-shared).
    public var remoteStaticKey: [UInt8]? { rs.map { Array($0.rawRepresentation) } }

    /// The result of `writeMessage`.
    public struct WriteResult: Sendable {
        /// The handshake message to send (at most 65535 bytes).
        public var message: [UInt8]
        /// Set when this was the last handshake message.
        public var transport: NoiseTransport?
    }

    /// The result of `readMessage`.
    public struct ReadResult: Sendable {
        /// The decrypted payload of the handshake message.
        public var payload: [UInt8]
        /// Set when this was the last handshake message.
        public var transport: NoiseTransport?
    }

    /// WriteMessage(payload, message_buffer) of §5.3.
    /// - Throws: `.outOfOrder` when it is not this side's turn; `.messageTooLarge` when the
    ///   message would exceed 65535 bytes; `.invalidPublicKey`. Any error fails the handshake.
    public mutating func writeMessage(payload: [UInt8] = []) throws(NoiseError) -> WriteResult {
        guard case .active(let index) = state, nextStep == .write else {
            throw NoiseError(.outOfOrder, "writeMessage called when the handshake expects \(nextStep): follow nextStep")
        }
        do throws(NoiseError) {
            var out: [UInt8] = []
            for token in noiseProtocol.pattern.messages[index] {
                switch token {
                case .e:
                    let key = e ?? Curve25519.KeyAgreement.PrivateKey()
                    e = key
                    let pub = Array(key.publicKey.rawRepresentation)
                    out += pub
                    symmetric.mixHash(pub)
                    if noiseProtocol.pattern.isPSK { symmetric.mixKey(pub) }
                case .s:
                    out += try symmetric.encryptAndHash(Array(s!.publicKey.rawRepresentation))
                default:
                    try mixDH(token)
                }
            }
            out += try symmetric.encryptAndHash(payload)
            guard out.count <= NoiseTransport.maxMessageLength else {
                throw NoiseError(.messageTooLarge, "a handshake message of \(out.count) bytes exceeds the Noise limit of 65535: send a smaller payload")
            }
            return WriteResult(message: out, transport: advance(from: index))
        } catch {
            state = .failed
            throw error
        }
    }

    /// ReadMessage(message, payload_buffer) of §5.3.
    /// - Throws: `.outOfOrder`; `.messageTooLarge`; `.truncated` when the message is shorter
    ///   than its tokens; `.decryptFailed` when it does not authenticate (wrong PSK, wrong
    ///   prologue, altered bytes); `.invalidPublicKey`. Any error fails the handshake.
    public mutating func readMessage(_ message: [UInt8]) throws(NoiseError) -> ReadResult {
        guard case .active(let index) = state, nextStep == .read else {
            throw NoiseError(.outOfOrder, "readMessage called when the handshake expects \(nextStep): follow nextStep")
        }
        do throws(NoiseError) {
            guard message.count <= NoiseTransport.maxMessageLength else {
                throw NoiseError(.messageTooLarge, "a handshake message of \(message.count) bytes exceeds the Noise limit of 65535: the peer is broken or hostile")
            }
            var at = 0
            func take(_ count: Int, _ what: String) throws(NoiseError) -> [UInt8] {
                guard message.count - at >= count else {
                    throw NoiseError(.truncated, "handshake message \(index + 1) of \(message.count) bytes ends before its \(what) (\(count) bytes at offset \(at)): the peer does not speak \(noiseProtocol.name)")
                }
                defer { at += count }
                return Array(message[at..<(at + count)])
            }
            for token in noiseProtocol.pattern.messages[index] {
                switch token {
                case .e:
                    let pub = try take(NoiseDH.dhLength, "ephemeral key")
                    re = try NoiseDH.publicKey(pub, what: "the peer's ephemeral key")
                    symmetric.mixHash(pub)
                    if noiseProtocol.pattern.isPSK { symmetric.mixKey(pub) }
                case .s:
                    let len = NoiseDH.dhLength + (symmetric.cipherState.hasKey ? NoiseCipher.tagLength : 0)
                    let pub = try symmetric.decryptAndHash(try take(len, "static key"))
                    rs = try NoiseDH.publicKey(pub, what: "the peer's static key")
                default:
                    try mixDH(token)
                }
            }
            let payload = try symmetric.decryptAndHash(Array(message[at...]))
            return ReadResult(payload: payload, transport: advance(from: index))
        } catch {
            state = .failed
            throw error
        }
    }

    /// Performs a DH or psk token; which keys "es" and "se" use depends on the role (§5.3).
    private mutating func mixDH(_ token: NoiseToken) throws(NoiseError) {
        let initiator = role == .initiator
        func need<T>(_ v: T?, _ what: String) throws(NoiseError) -> T {
            guard let v else { throw NoiseError(.invalidConfiguration, "token \(token.rawValue) needs \(what), which is not set") }
            return v
        }
        switch token {
        case .ee:
            symmetric.mixKey(try NoiseDH.dh(need(e, "e"), need(re, "re")))
        case .es:
            symmetric.mixKey(initiator ? try NoiseDH.dh(need(e, "e"), need(rs, "rs")) : try NoiseDH.dh(need(s, "s"), need(re, "re")))
        case .se:
            symmetric.mixKey(initiator ? try NoiseDH.dh(need(s, "s"), need(re, "re")) : try NoiseDH.dh(need(e, "e"), need(rs, "rs")))
        case .ss:
            symmetric.mixKey(try NoiseDH.dh(need(s, "s"), need(rs, "rs")))
        case .psk:
            symmetric.mixKeyAndHash(NoiseHash.bytes(psks[pskIndex]))
            pskIndex += 1
        case .e, .s:
            preconditionFailure("e and s are handled by the caller")
        }
    }

    /// Moves to the next message; after the last one, Splits and returns the transport.
    private mutating func advance(from index: Int) -> NoiseTransport? {
        guard index + 1 == noiseProtocol.pattern.messages.count else {
            state = .active(messageIndex: index + 1)
            return nil
        }
        state = .complete
        let (c1, c2) = symmetric.split()
        let initiator = role == .initiator
        // The ephemeral private key is no longer needed; drop it (forward secrecy).
        e = nil
        return NoiseTransport(sender: initiator ? c1 : c2, receiver: initiator ? c2 : c1,
                              handshakeHash: symmetric.handshakeHash, remoteStaticKey: remoteStaticKey)
    }
}

extension HandshakeState: CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    /// Shows the protocol, role, next step and the peer's static key; never a private key or PSK.
    public var description: String {
        "HandshakeState(\(noiseProtocol.name), \(role.rawValue), next: \(nextStep), remote static: \(remoteStaticKey.map(Hex.encode) ?? "none"))"
    }
    public var debugDescription: String { description }
    public var customMirror: Mirror {
        Mirror(self, children: ["protocol": noiseProtocol.name, "role": role, "nextStep": nextStep,
                                "symmetric": symmetric, "remoteStatic": remoteStaticKey.map(Hex.encode) ?? "none"])
    }
}

extension NoiseTransport: CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    /// Shows both cipher states (nonces only), the handshake hash and the peer's static key.
    public var description: String {
        "NoiseTransport(sender: \(sender), receiver: \(receiver), handshake hash: \(Hex.encode(handshakeHash)), remote static: \(remoteStaticKey.map(Hex.encode) ?? "none"))"
    }
    public var debugDescription: String { description }
    public var customMirror: Mirror {
        Mirror(self, children: ["sender": sender, "receiver": receiver, "handshakeHash": Hex.encode(handshakeHash),
                                "remoteStatic": remoteStaticKey.map(Hex.encode) ?? "none"])
    }
}
