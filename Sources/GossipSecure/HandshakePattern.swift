// Handshake patterns (Noise revision 34, §7) and protocol names (§8) that this module
// implements: XX and XXpsk3 for the gossip channel; NN, NNpsk0, IK and IKpsk2 for the
// published test vectors. DH is always 25519 and the hash always SHA256.

/// A token of a Noise message pattern (§7.1, §9.1).
public enum NoiseToken: String, Sendable, Equatable {
    case e, s, ee, es, se, ss, psk
}

/// A Noise handshake pattern: pre-messages and message patterns, first message from the
/// initiator, then alternating.
public struct HandshakePattern: Sendable, Equatable {
    /// The pattern's name as it appears in a protocol name, e.g. "XXpsk3".
    public let name: String
    /// Pre-message tokens of the initiator ("e", "s" or both), mixed into `h` first.
    public let initiatorPreMessage: [NoiseToken]
    /// Pre-message tokens of the responder.
    public let responderPreMessage: [NoiseToken]
    /// Message patterns; index 0 is sent by the initiator, then roles alternate.
    public let messages: [[NoiseToken]]

    /// True when the pattern has a "psk" modifier: then every "e" token also does MixKey (§9.2).
    public var isPSK: Bool { messages.contains { $0.contains(.psk) } }
    /// How many pre-shared keys the pattern consumes.
    public var pskCount: Int { messages.reduce(0) { $0 + $1.filter { $0 == .psk }.count } }

    /// The exact length of handshake message `index` when it carries `payloadLength` payload
    /// bytes: 32 per "e", 32 (+16 once a key is set) per "s", the payload (+16 once a key is
    /// set). A transport can bound its read buffer by this before the peer is authenticated.
    /// - Precondition: `index` is a valid message index.
    public func messageLength(_ index: Int, payloadLength: Int) -> Int {
        precondition(messages.indices.contains(index), "message index \(index) outside pattern \(name)")
        var hasKey = false
        var length = 0
        for (i, tokens) in messages.enumerated() where i <= index {
            for token in tokens {
                switch token {
                case .e:
                    if i == index { length += 32 }
                    if isPSK { hasKey = true }
                case .s:
                    if i == index { length += 32 + (hasKey ? NoiseCipher.tagLength : 0) }
                case .ee, .es, .se, .ss, .psk:
                    hasKey = true
                }
            }
        }
        return length + payloadLength + (hasKey ? NoiseCipher.tagLength : 0)
    }

    public static let nn = HandshakePattern(name: "NN", initiatorPreMessage: [], responderPreMessage: [],
                                            messages: [[.e], [.e, .ee]])
    public static let nnpsk0 = HandshakePattern(name: "NNpsk0", initiatorPreMessage: [], responderPreMessage: [],
                                                messages: [[.psk, .e], [.e, .ee]])
    public static let xx = HandshakePattern(name: "XX", initiatorPreMessage: [], responderPreMessage: [],
                                            messages: [[.e], [.e, .ee, .s, .es], [.s, .se]])
    public static let xxpsk3 = HandshakePattern(name: "XXpsk3", initiatorPreMessage: [], responderPreMessage: [],
                                                messages: [[.e], [.e, .ee, .s, .es], [.s, .se, .psk]])
    public static let ik = HandshakePattern(name: "IK", initiatorPreMessage: [], responderPreMessage: [.s],
                                            messages: [[.e, .es, .s, .ss], [.e, .ee, .se]])
    public static let ikpsk2 = HandshakePattern(name: "IKpsk2", initiatorPreMessage: [], responderPreMessage: [.s],
                                                messages: [[.e, .es, .s, .ss], [.e, .ee, .se, .psk]])

    /// Every pattern this module implements.
    public static let all: [HandshakePattern] = [.nn, .nnpsk0, .xx, .xxpsk3, .ik, .ikpsk2]
}

/// A full Noise protocol: `Noise_<pattern>_25519_<cipher>_SHA256`.
public struct NoiseProtocol: Sendable, Equatable, CustomStringConvertible {
    public let pattern: HandshakePattern
    public let cipher: NoiseCipher

    public init(pattern: HandshakePattern, cipher: NoiseCipher) {
        self.pattern = pattern
        self.cipher = cipher
    }

    /// Parses a protocol name such as "Noise_XXpsk3_25519_AESGCM_SHA256".
    /// - Throws: `.unsupportedProtocol` naming what is supported.
    public init(name: String) throws(NoiseError) {
        let parts = name.split(separator: "_", omittingEmptySubsequences: false).map(String.init)
        let supported = "supported: Noise_{\(HandshakePattern.all.map(\.name).joined(separator: ","))}_25519_{AESGCM,ChaChaPoly}_SHA256"
        guard parts.count == 5, parts[0] == "Noise", parts[2] == "25519", parts[4] == "SHA256",
              let pattern = HandshakePattern.all.first(where: { $0.name == parts[1] }),
              let cipher = NoiseCipher(rawValue: parts[3])
        else {
            throw NoiseError(.unsupportedProtocol, "Noise protocol \"\(name)\" is not implemented (\(supported))")
        }
        self.init(pattern: pattern, cipher: cipher)
    }

    /// The protocol name hashed into `h` by InitializeSymmetric.
    public var name: String { "Noise_\(pattern.name)_25519_\(cipher.rawValue)_SHA256" }
    public var description: String { name }

    /// The gossip channel: Noise_XXpsk3_25519_<cipher>_SHA256 with the network key as PSK.
    public static func gossipChannel(cipher: NoiseCipher) -> NoiseProtocol {
        NoiseProtocol(pattern: .xxpsk3, cipher: cipher)
    }
}
