// SymmetricState of the Noise Protocol Framework, revision 34, section 5.2, with SHA-256 and
// the HKDF of section 4.3 built on swift-crypto's HMAC<SHA256>.
import Crypto
import Foundation

/// Noise's hash function SHA256 (§12.5): HASHLEN = 32, BLOCKLEN = 64.
enum NoiseHash {
    static let hashLength = 32

    static func hash(_ data: [UInt8]) -> [UInt8] {
        [UInt8](SHA256.hash(data: data))
    }

    static func hmac(key: SymmetricKey, _ data: [UInt8]) -> SymmetricKey {
        SymmetricKey(data: HMAC<SHA256>.authenticationCode(for: data, using: key))
    }

    static func bytes(_ key: SymmetricKey) -> [UInt8] {
        key.withUnsafeBytes { [UInt8]($0) }
    }

    /// HKDF(chaining_key, input_key_material, num_outputs) exactly as §4.3 defines it:
    /// temp_key = HMAC(ck, ikm); output1 = HMAC(temp_key, 0x01);
    /// output2 = HMAC(temp_key, output1 || 0x02); output3 = HMAC(temp_key, output2 || 0x03).
    static func hkdf(chainingKey: SymmetricKey, inputKeyMaterial: [UInt8], outputs: Int) -> [SymmetricKey] {
        precondition(outputs == 2 || outputs == 3, "Noise HKDF yields 2 or 3 outputs")
        let tempKey = hmac(key: chainingKey, inputKeyMaterial)
        var result: [SymmetricKey] = []
        var previous: [UInt8] = []
        for i in 1...outputs {
            let out = hmac(key: tempKey, previous + [UInt8(i)])
            result.append(out)
            previous = bytes(out)
        }
        return result
    }
}

/// The Noise `SymmetricState` (revision 34, §5.2): a `CipherState`, the chaining key `ck` and
/// the handshake hash `h`. A value type with no I/O.
public struct SymmetricState: Sendable {
    /// The embedded cipher state.
    public private(set) var cipherState: CipherState
    private var ck: SymmetricKey
    private var h: [UInt8]

    /// InitializeSymmetric(protocol_name): `h` is the name padded with zeros to 32 bytes, or
    /// HASH(name) when longer; `ck = h`; the cipher state has no key.
    public init(protocolName: String, cipher: NoiseCipher) {
        let name = Array(protocolName.utf8)
        if name.count <= NoiseHash.hashLength {
            h = name + [UInt8](repeating: 0, count: NoiseHash.hashLength - name.count)
        } else {
            h = NoiseHash.hash(name)
        }
        ck = SymmetricKey(data: h)
        cipherState = CipherState(cipher: cipher)
    }

    /// MixKey(ikm): `ck, temp_k = HKDF(ck, ikm, 2)`; InitializeKey(temp_k).
    public mutating func mixKey(_ inputKeyMaterial: [UInt8]) {
        let out = NoiseHash.hkdf(chainingKey: ck, inputKeyMaterial: inputKeyMaterial, outputs: 2)
        ck = out[0]
        try! cipherState.initializeKey(out[1])  // 32 bytes by construction (HASHLEN = 32)
    }

    /// MixHash(data): `h = HASH(h || data)`.
    public mutating func mixHash(_ data: [UInt8]) {
        h = NoiseHash.hash(h + data)
    }

    /// MixKeyAndHash(ikm): `ck, temp_h, temp_k = HKDF(ck, ikm, 3)`; MixHash(temp_h);
    /// InitializeKey(temp_k). Used for "psk" tokens (§9).
    public mutating func mixKeyAndHash(_ inputKeyMaterial: [UInt8]) {
        let out = NoiseHash.hkdf(chainingKey: ck, inputKeyMaterial: inputKeyMaterial, outputs: 3)
        ck = out[0]
        mixHash(NoiseHash.bytes(out[1]))
        try! cipherState.initializeKey(out[2])
    }

    /// GetHandshakeHash(): `h`. Channel binding; public, not secret.
    public var handshakeHash: [UInt8] { h }

    /// EncryptAndHash(plaintext): `ciphertext = EncryptWithAd(h, plaintext)`; MixHash(ciphertext).
    public mutating func encryptAndHash(_ plaintext: [UInt8]) throws(NoiseError) -> [UInt8] {
        let ciphertext = try cipherState.encryptWithAd(h, plaintext)
        mixHash(ciphertext)
        return ciphertext
    }

    /// DecryptAndHash(ciphertext): `plaintext = DecryptWithAd(h, ciphertext)`; MixHash(ciphertext).
    /// - Throws: `.decryptFailed` when authentication fails.
    public mutating func decryptAndHash(_ ciphertext: [UInt8]) throws(NoiseError) -> [UInt8] {
        let plaintext = try cipherState.decryptWithAd(h, ciphertext)
        mixHash(ciphertext)
        return plaintext
    }

    /// Split(): `temp_k1, temp_k2 = HKDF(ck, zerolen, 2)`; two cipher states keyed with them.
    /// The first is for initiator-to-responder messages, the second for the other direction.
    public func split() -> (CipherState, CipherState) {
        let out = NoiseHash.hkdf(chainingKey: ck, inputKeyMaterial: [], outputs: 2)
        var c1 = CipherState(cipher: cipherState.cipher)
        var c2 = CipherState(cipher: cipherState.cipher)
        try! c1.initializeKey(out[0])
        try! c2.initializeKey(out[1])
        return (c1, c2)
    }
}

extension SymmetricState: CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    /// Shows the cipher state and the (public) handshake hash; never the chaining key.
    public var description: String { "SymmetricState(\(cipherState), ck: <redacted>, h: \(Hex.encode(h)))" }
    public var debugDescription: String { description }
    public var customMirror: Mirror {
        Mirror(self, children: ["cipherState": cipherState, "ck": "<redacted>", "h": Hex.encode(h)])
    }
}
