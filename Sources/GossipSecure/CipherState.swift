// CipherState of the Noise Protocol Framework, revision 34, section 5.1, over swift-crypto's
// AES-256-GCM and ChaCha20-Poly1305 (the cipher functions of section 12.3 and 12.4).
import Crypto
import Foundation

/// A Noise cipher function (Noise revision 34, section 12).
public enum NoiseCipher: String, Sendable, Equatable, CaseIterable {
    /// AES-256-GCM; the 96-bit nonce is 32 zero bits then the 64-bit counter big-endian (§12.4).
    case aesGCM = "AESGCM"
    /// ChaCha20-Poly1305; the 96-bit nonce is 32 zero bits then the counter little-endian (§12.3).
    case chaChaPoly = "ChaChaPoly"

    /// The AEAD tag length in bytes (both ciphers).
    public static let tagLength = 16

    /// The 12-byte nonce this cipher uses for counter `n`.
    func nonceBytes(_ n: UInt64) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 12)
        for i in 0..<8 {
            let byte = UInt8(truncatingIfNeeded: n >> (8 * UInt64(i)))
            switch self {
            case .aesGCM: out[11 - i] = byte
            case .chaChaPoly: out[4 + i] = byte
            }
        }
        return out
    }

    /// ENCRYPT(k, n, ad, plaintext) of §4.2: appends the ciphertext and the 16-byte tag to `out`.
    func encrypt(key: SymmetricKey, nonce n: UInt64, ad: UnsafeRawBufferPointer, plaintext: UnsafeRawBufferPointer,
                 appendingTo out: inout [UInt8]) throws(NoiseError) {
        do {
            switch self {
            case .aesGCM:
                let box = try AES.GCM.seal(plaintext, using: key, nonce: AES.GCM.Nonce(data: nonceBytes(n)), authenticating: ad)
                Self.append(box.ciphertext, box.tag, to: &out)
            case .chaChaPoly:
                let box = try ChaChaPoly.seal(plaintext, using: key, nonce: ChaChaPoly.Nonce(data: nonceBytes(n)), authenticating: ad)
                Self.append(box.ciphertext, box.tag, to: &out)
            }
        } catch {
            throw NoiseError(.decryptFailed, "\(rawValue) encryption failed in the crypto library: \(error)")
        }
    }

    /// DECRYPT(k, n, ad, ciphertext) of §4.2: appends the plaintext to `out`; throws
    /// `.decryptFailed` when authentication fails (then `out` is unchanged).
    func decrypt(key: SymmetricKey, nonce n: UInt64, ad: UnsafeRawBufferPointer, ciphertext: UnsafeRawBufferPointer,
                 appendingTo out: inout [UInt8]) throws(NoiseError) {
        guard ciphertext.count >= Self.tagLength else {
            throw NoiseError(.decryptFailed, "\(rawValue) ciphertext of \(ciphertext.count) bytes is shorter than its 16-byte tag: the peer sent a truncated or forged message; close the connection")
        }
        let split = ciphertext.count - Self.tagLength
        let body = UnsafeRawBufferPointer(rebasing: ciphertext[..<split])
        let tag = UnsafeRawBufferPointer(rebasing: ciphertext[split...])
        do {
            switch self {
            case .aesGCM:
                let box = try AES.GCM.SealedBox(nonce: AES.GCM.Nonce(data: nonceBytes(n)), ciphertext: body, tag: tag)
                Self.append(try AES.GCM.open(box, using: key, authenticating: ad), Data(), to: &out)
            case .chaChaPoly:
                let box = try ChaChaPoly.SealedBox(nonce: ChaChaPoly.Nonce(data: nonceBytes(n)), ciphertext: body, tag: tag)
                Self.append(try ChaChaPoly.open(box, using: key, authenticating: ad), Data(), to: &out)
            }
        } catch {
            throw NoiseError(.decryptFailed, "\(rawValue) authentication failed at nonce \(n): the peer used another key (wrong network key?) or the bytes were altered; close the connection")
        }
    }

    /// ENCRYPT into caller memory: writes ciphertext || tag (plaintext.count + 16 bytes) at
    /// `out`, which must have room. Safe to call from several threads at once with different
    /// nonces and buffers (parallel record sealing).
    func encrypt(key: SymmetricKey, nonce n: UInt64, plaintext: UnsafeRawBufferPointer,
                 into out: UnsafeMutableRawPointer) throws(NoiseError) {
        let empty = UnsafeRawBufferPointer(start: nil, count: 0)
        do {
            switch self {
            case .aesGCM:
                let box = try AES.GCM.seal(plaintext, using: key, nonce: AES.GCM.Nonce(data: nonceBytes(n)), authenticating: empty)
                Self.copy(box.ciphertext, box.tag, to: out)
            case .chaChaPoly:
                let box = try ChaChaPoly.seal(plaintext, using: key, nonce: ChaChaPoly.Nonce(data: nonceBytes(n)), authenticating: empty)
                Self.copy(box.ciphertext, box.tag, to: out)
            }
        } catch {
            throw NoiseError(.decryptFailed, "\(rawValue) encryption failed in the crypto library: \(error)")
        }
    }

    /// DECRYPT into caller memory: writes the ciphertext.count - 16 plaintext bytes at `out`
    /// only when authentication succeeds (on failure nothing is written).
    func decrypt(key: SymmetricKey, nonce n: UInt64, ciphertext: UnsafeRawBufferPointer,
                 into out: UnsafeMutableRawPointer) throws(NoiseError) {
        guard ciphertext.count >= Self.tagLength else {
            throw NoiseError(.decryptFailed, "\(rawValue) ciphertext of \(ciphertext.count) bytes is shorter than its 16-byte tag: the peer sent a truncated or forged message; close the connection")
        }
        let split = ciphertext.count - Self.tagLength
        let body = UnsafeRawBufferPointer(rebasing: ciphertext[..<split])
        let tag = UnsafeRawBufferPointer(rebasing: ciphertext[split...])
        let empty = UnsafeRawBufferPointer(start: nil, count: 0)
        do {
            switch self {
            case .aesGCM:
                let box = try AES.GCM.SealedBox(nonce: AES.GCM.Nonce(data: nonceBytes(n)), ciphertext: body, tag: tag)
                Self.copy(try AES.GCM.open(box, using: key, authenticating: empty), Data(), to: out)
            case .chaChaPoly:
                let box = try ChaChaPoly.SealedBox(nonce: ChaChaPoly.Nonce(data: nonceBytes(n)), ciphertext: body, tag: tag)
                Self.copy(try ChaChaPoly.open(box, using: key, authenticating: empty), Data(), to: out)
            }
        } catch {
            throw NoiseError(.decryptFailed, "\(rawValue) authentication failed at nonce \(n): the peer used another key (wrong network key?) or the bytes were altered; close the connection")
        }
    }

    /// Copies `a || b` to `out` with memcpy.
    private static func copy(_ a: Data, _ b: Data, to out: UnsafeMutableRawPointer) {
        var at = out
        for part in [a, b] {
            part.withUnsafeBytes { raw in
                if raw.count > 0 { at.copyMemory(from: raw.baseAddress!, byteCount: raw.count) }
                at += raw.count
            }
        }
    }

    /// Appends `a || b` to `out` with memcpy.
    private static func append(_ a: Data, _ b: Data, to out: inout [UInt8]) {
        out.reserveCapacity(out.count + a.count + b.count)
        for part in [a, b] {
            part.withUnsafeBytes { raw in raw.withMemoryRebound(to: UInt8.self) { out.append(contentsOf: $0) } }
        }
    }
}

/// The Noise `CipherState` (revision 34, §5.1): a key `k` (or none) and a 64-bit nonce `n`.
///
/// A value type with no I/O. Invariant: a nonce is never used twice with one key. Every
/// successful `encryptWithAd`/`decryptWithAd` with a key increments `n`; the nonce 2^64-1 is
/// reserved (it is used only by `rekey`), so once `n` reaches it every further call throws
/// `.nonceExhausted`. A failed decryption leaves `n` unchanged (§5.1).
public struct CipherState: Sendable {
    /// The cipher function.
    public let cipher: NoiseCipher
    private var k: SymmetricKey? {
        didSet { fast = cipher == .aesGCM ? k.flatMap(FastAESGCM.init(key:)) : nil }
    }
    /// The same key as a BoringSSL context for the buffer forms (AESGCM only; nil when the
    /// fast path is unavailable). Shared by copies: it is immutable.
    private var fast: FastAESGCM?
    /// The next nonce to use.
    public private(set) var n: UInt64 = 0

    /// The reserved nonce 2^64-1 (§5.1).
    public static let maxNonce = UInt64.max

    /// A cipher state with no key: encryption and decryption pass bytes through unchanged.
    public init(cipher: NoiseCipher) {
        self.cipher = cipher
    }

    /// InitializeKey(key): sets `k = key` (or no key, with nil) and `n = 0`.
    /// - Throws: `.invalidConfiguration` when the key is not 32 bytes.
    public mutating func initializeKey(_ key: SymmetricKey?) throws(NoiseError) {
        if let key, key.bitCount != 256 {
            throw NoiseError(.invalidConfiguration, "a Noise cipher key must be 32 bytes, got \(key.bitCount / 8)")
        }
        k = key
        n = 0
    }

    /// HasKey(): true when a key is set.
    public var hasKey: Bool { k != nil }

    /// SetNonce(nonce): sets `n`. Used to decrypt out-of-order records; the caller then owns the
    /// rule that no nonce is used twice.
    public mutating func setNonce(_ nonce: UInt64) {
        n = nonce
    }

    /// EncryptWithAd(ad, plaintext): ENCRYPT(k, n++, ad, plaintext), or the plaintext when no key.
    /// - Throws: `.nonceExhausted` when `n` is 2^64-1: rekeying does not reset `n`, so the session
    ///   must end (open a new connection).
    public mutating func encryptWithAd(_ ad: [UInt8], _ plaintext: [UInt8]) throws(NoiseError) -> [UInt8] {
        var out: [UInt8] = []
        var failure: NoiseError?
        ad.withUnsafeBytes { a in
            plaintext.withUnsafeBytes { p in
                do throws(NoiseError) { try encryptWithAd(a, p, appendingTo: &out) } catch { failure = error }
            }
        }
        if let failure { throw failure }
        return out
    }

    /// EncryptWithAd appending to a caller-owned buffer: `out` keeps its capacity between
    /// records, so sealing a 64 KiB record allocates nothing new (a fresh array per record
    /// measured about 2.5 times slower than the seal itself). Same nonce rules as above.
    /// - Throws: `.nonceExhausted`; when it throws, `out` and `n` are unchanged.
    public mutating func encryptWithAd(_ ad: UnsafeRawBufferPointer, _ plaintext: UnsafeRawBufferPointer, appendingTo out: inout [UInt8]) throws(NoiseError) {
        guard let k else {
            out.append(contentsOf: plaintext)
            return
        }
        guard n != Self.maxNonce else {
            throw NoiseError(.nonceExhausted, "the send nonce reached 2^64-1, which Noise reserves: this session cannot encrypt any more; close the connection and handshake again")
        }
        try cipher.encrypt(key: k, nonce: n, ad: ad, plaintext: plaintext, appendingTo: &out)
        n += 1
    }

    /// DecryptWithAd(ad, ciphertext): DECRYPT(k, n++, ad, ciphertext), or the bytes when no key.
    /// - Throws: `.decryptFailed` on an authentication failure (then `n` is unchanged);
    ///   `.nonceExhausted` when `n` is 2^64-1.
    public mutating func decryptWithAd(_ ad: [UInt8], _ ciphertext: [UInt8]) throws(NoiseError) -> [UInt8] {
        var out: [UInt8] = []
        var failure: NoiseError?
        ad.withUnsafeBytes { a in
            ciphertext.withUnsafeBytes { c in
                do throws(NoiseError) { try decryptWithAd(a, c, appendingTo: &out) } catch { failure = error }
            }
        }
        if let failure { throw failure }
        return out
    }

    /// DecryptWithAd appending the plaintext to a caller-owned buffer (see the encrypting twin).
    /// - Throws: `.decryptFailed` or `.nonceExhausted`; when it throws, `out` and `n` are unchanged.
    public mutating func decryptWithAd(_ ad: UnsafeRawBufferPointer, _ ciphertext: UnsafeRawBufferPointer, appendingTo out: inout [UInt8]) throws(NoiseError) {
        guard let k else {
            out.append(contentsOf: ciphertext)
            return
        }
        guard n != Self.maxNonce else {
            throw NoiseError(.nonceExhausted, "the receive nonce reached 2^64-1, which Noise reserves: this session cannot decrypt any more; close the connection and handshake again")
        }
        try cipher.decrypt(key: k, nonce: n, ad: ad, ciphertext: ciphertext, appendingTo: &out)
        n += 1
    }

    /// EncryptWithAd with empty associated data into caller memory (the record layer's
    /// parallel path): writes plaintext.count + 16 bytes at `out`, which must have room.
    /// A worker may seal on a copy after `setNonce(n + i)` while the owner advances its own
    /// `n` past the batch; the owner must never hand out one nonce twice.
    /// - Throws: `.nonceExhausted`; `.invalidConfiguration` without a key. When it throws,
    ///   `n` is unchanged.
    public mutating func encrypt(_ plaintext: UnsafeRawBufferPointer, into out: UnsafeMutableRawPointer) throws(NoiseError) {
        guard let k else {
            throw NoiseError(.invalidConfiguration, "encrypting into a buffer needs a key: finish the handshake first")
        }
        guard n != Self.maxNonce else {
            throw NoiseError(.nonceExhausted, "the send nonce reached 2^64-1, which Noise reserves: this session cannot encrypt any more; close the connection and handshake again")
        }
        if let fast {
            guard fast.seal(nonce: n, plaintext: plaintext, ad: UnsafeRawBufferPointer(start: nil, count: 0), into: out) else {
                throw NoiseError(.decryptFailed, "AESGCM encryption failed in the crypto library")
            }
        } else {
            try cipher.encrypt(key: k, nonce: n, plaintext: plaintext, into: out)
        }
        n += 1
    }

    /// DecryptWithAd with empty associated data into caller memory: writes
    /// ciphertext.count - 16 bytes at `out` when authentication succeeds.
    /// - Throws: `.decryptFailed` (then `out` holds no plaintext, possibly zeros, and `n` is
    ///   unchanged); `.nonceExhausted`;
    ///   `.invalidConfiguration` without a key.
    public mutating func decrypt(_ ciphertext: UnsafeRawBufferPointer, into out: UnsafeMutableRawPointer) throws(NoiseError) {
        guard let k else {
            throw NoiseError(.invalidConfiguration, "decrypting into a buffer needs a key: finish the handshake first")
        }
        guard n != Self.maxNonce else {
            throw NoiseError(.nonceExhausted, "the receive nonce reached 2^64-1, which Noise reserves: this session cannot decrypt any more; close the connection and handshake again")
        }
        if let fast {
            guard ciphertext.count >= NoiseCipher.tagLength,
                  fast.open(nonce: n, ciphertext: ciphertext, ad: UnsafeRawBufferPointer(start: nil, count: 0), into: out) else {
                throw NoiseError(.decryptFailed, "AESGCM authentication failed at nonce \(n): the peer used another key (wrong network key?) or the bytes were altered; close the connection")
            }
        } else {
            try cipher.decrypt(key: k, nonce: n, ciphertext: ciphertext, into: out)
        }
        n += 1
    }

    /// The raw 32 key bytes, for a key log (SSLKEYLOGFILE-style, SPEC §13) only: whoever
    /// holds them reads this direction of the session. Nil without a key. Never print them
    /// anywhere else.
    public func exportKeyForKeyLog() -> [UInt8]? {
        k.map { NoiseHash.bytes($0) }
    }

    /// Rekey(): `k = REKEY(k)`, the first 32 bytes of ENCRYPT(k, 2^64-1, zerolen, 32 zero
    /// bytes) (§4.2, §11.3). `n` is not changed. Both sides must rekey at the same point.
    /// - Throws: `.invalidConfiguration` when there is no key.
    public mutating func rekey() throws(NoiseError) {
        guard let k else {
            throw NoiseError(.invalidConfiguration, "Rekey needs a key: finish the handshake first")
        }
        var out: [UInt8] = []
        var failure: NoiseError?
        [UInt8](repeating: 0, count: 32).withUnsafeBytes { zeros in
            do throws(NoiseError) {
                try cipher.encrypt(key: k, nonce: Self.maxNonce, ad: UnsafeRawBufferPointer(start: nil, count: 0), plaintext: zeros, appendingTo: &out)
            } catch { failure = error }
        }
        if let failure { throw failure }
        self.k = SymmetricKey(data: out[..<32])
    }
}

extension CipherState: CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    /// Shows the cipher, whether a key is set and the nonce; never the key.
    public var description: String { "CipherState(\(cipher.rawValue), key: \(hasKey ? "<redacted>" : "none"), n: \(n))" }
    public var debugDescription: String { description }
    public var customMirror: Mirror {
        Mirror(self, children: ["cipher": cipher, "key": hasKey ? "<redacted>" : "none", "n": n])
    }
}
