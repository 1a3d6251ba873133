// CipherState and SymmetricState against their definitions in Noise revision 34 (§4.2, §4.3,
// §5.1, §5.2, §11.3, §12.3, §12.4), checked with swift-crypto's primitives directly.
import Crypto
import Foundation
import Testing
@testable import GossipSecure

/// ENCRYPT(k, n, ad, plaintext) computed straight from swift-crypto with the nonce layout of §12.
func referenceEncrypt(_ cipher: NoiseCipher, key: SymmetricKey, n: UInt64, ad: [UInt8] = [], _ plaintext: [UInt8]) throws -> [UInt8] {
    switch cipher {
    case .aesGCM:
        // 32 zero bits, then n big-endian.
        let nonce = [0, 0, 0, 0] + withUnsafeBytes(of: n.bigEndian) { Array($0) }
        let box = try AES.GCM.seal(plaintext, using: key, nonce: AES.GCM.Nonce(data: nonce), authenticating: ad)
        return Array(box.ciphertext) + Array(box.tag)
    case .chaChaPoly:
        // 32 zero bits, then n little-endian.
        let nonce = [0, 0, 0, 0] + withUnsafeBytes(of: n.littleEndian) { Array($0) }
        let box = try ChaChaPoly.seal(plaintext, using: key, nonce: ChaChaPoly.Nonce(data: nonce), authenticating: ad)
        return Array(box.ciphertext) + Array(box.tag)
    }
}

@Suite struct CipherStateTests {
    let key = SymmetricKey(data: (0..<32).map { UInt8($0) })

    @Test(arguments: NoiseCipher.allCases)
    func nonceLayoutMatchesSection12(cipher: NoiseCipher) throws {
        var cs = CipherState(cipher: cipher)
        try cs.initializeKey(key)
        let n: UInt64 = 0x0102_0304_0506_0708
        cs.setNonce(n)
        let out = try cs.encryptWithAd([7, 7], [1, 2, 3])
        #expect(out == (try referenceEncrypt(cipher, key: key, n: n, ad: [7, 7], [1, 2, 3])))
        #expect(cs.n == n + 1)
        let bytes = cipher.nonceBytes(n)
        #expect(bytes == (cipher == .aesGCM ? [0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8] : [0, 0, 0, 0, 8, 7, 6, 5, 4, 3, 2, 1]))
    }

    @Test(arguments: NoiseCipher.allCases)
    func withoutAKeyBytesPassThrough(cipher: NoiseCipher) throws {
        var cs = CipherState(cipher: cipher)
        #expect(!cs.hasKey)
        #expect(try cs.encryptWithAd([1], [5, 6]) == [5, 6])
        #expect(try cs.decryptWithAd([1], [5, 6]) == [5, 6])
        #expect(cs.n == 0)
        expectNoise(.invalidConfiguration) { try cs.rekey() }
        expectNoise(.invalidConfiguration) { try cs.initializeKey(SymmetricKey(size: .bits128)) }
    }

    /// The nonce 2^64-1 is reserved: the last usable nonce is 2^64-2, then every call throws
    /// and the state never encrypts twice under one nonce.
    @Test(arguments: NoiseCipher.allCases)
    func nonceExhaustionThrows(cipher: NoiseCipher) throws {
        var sender = CipherState(cipher: cipher)
        var receiver = CipherState(cipher: cipher)
        try sender.initializeKey(key)
        try receiver.initializeKey(key)
        sender.setNonce(UInt64.max - 1)
        receiver.setNonce(UInt64.max - 1)
        let last = try sender.encryptWithAd([], [42])
        #expect(last == (try referenceEncrypt(cipher, key: key, n: UInt64.max - 1, [42])))
        #expect(try receiver.decryptWithAd([], last) == [42])
        #expect(sender.n == UInt64.max && receiver.n == UInt64.max)
        expectNoise(.nonceExhausted) { _ = try sender.encryptWithAd([], [1]) }
        expectNoise(.nonceExhausted) { _ = try sender.encryptWithAd([], []) }
        expectNoise(.nonceExhausted) { _ = try receiver.decryptWithAd([], last) }
        #expect(sender.n == UInt64.max)
        // Rekey does not reset the nonce: still exhausted.
        try sender.rekey()
        expectNoise(.nonceExhausted) { _ = try sender.encryptWithAd([], [1]) }
        // Through the transport API too.
        var (it, _) = try Pair(cipher: cipher).handshake()
        it.sender.setNonce(UInt64.max)
        expectNoise(.nonceExhausted) { _ = try it.encrypt([1]) }
    }

    /// Rekey(): k = first 32 bytes of ENCRYPT(k, 2^64-1, zerolen, 32 zero bytes); n unchanged.
    @Test(arguments: NoiseCipher.allCases)
    func rekeyMatchesTheSpecDefinition(cipher: NoiseCipher) throws {
        var cs = CipherState(cipher: cipher)
        try cs.initializeKey(key)
        _ = try cs.encryptWithAd([], [1, 2, 3])
        _ = try cs.encryptWithAd([], [4])
        try cs.rekey()
        #expect(cs.n == 2)
        let expectedKey = SymmetricKey(data: try referenceEncrypt(cipher, key: key, n: UInt64.max, [UInt8](repeating: 0, count: 32)).prefix(32))
        let out = try cs.encryptWithAd([9], [10, 11])
        #expect(out == (try referenceEncrypt(cipher, key: expectedKey, n: 2, ad: [9], [10, 11])))
        #expect(out != (try referenceEncrypt(cipher, key: key, n: 2, ad: [9], [10, 11])))
    }

    @Test(arguments: NoiseCipher.allCases)
    func transportSidesThatRekeyTogetherInteroperate(cipher: NoiseCipher) throws {
        var (it, rt) = try Pair(cipher: cipher).handshake()
        #expect(try rt.decrypt(it.encrypt([1])) == [1])
        try it.sender.rekey()
        let sealed = try it.encrypt([2])
        var stale = rt
        expectNoise(.decryptFailed) { _ = try stale.decrypt(sealed) }
        try rt.receiver.rekey()
        #expect(try rt.decrypt(sealed) == [2])
    }

    /// The appending variants produce the same bytes as the array ones, after what `out`
    /// already holds, and leave `out` and `n` unchanged when they throw.
    @Test(arguments: NoiseCipher.allCases)
    func appendingVariantsMatchAndAreAtomic(cipher: NoiseCipher) throws {
        var a = CipherState(cipher: cipher), b = CipherState(cipher: cipher)
        try a.initializeKey(key)
        try b.initializeKey(key)
        let ad: [UInt8] = [1, 2], plain = [UInt8](repeating: 9, count: 1000)
        var out: [UInt8] = [0xee]
        try ad.withUnsafeBytes { adp in try plain.withUnsafeBytes { try a.encryptWithAd(adp, $0, appendingTo: &out) } }
        let expected = try b.encryptWithAd(ad, plain)
        #expect(out == [0xee] + expected)
        #expect(a.n == 1 && b.n == 1)
        var receiver = CipherState(cipher: cipher)
        try receiver.initializeKey(key)
        var opened: [UInt8] = [7]
        let sealed = Array(out.dropFirst())
        // A forged record: throws, and neither `opened` nor the nonce moves.
        let forged = flipped(sealed, at: 3)
        expectNoise(.decryptFailed) {
            try ad.withUnsafeBytes { adp in try forged.withUnsafeBytes { try receiver.decryptWithAd(adp, $0, appendingTo: &opened) } }
        }
        #expect(opened == [7] && receiver.n == 0)
        try ad.withUnsafeBytes { adp in try sealed.withUnsafeBytes { try receiver.decryptWithAd(adp, $0, appendingTo: &opened) } }
        #expect(opened == [7] + plain && receiver.n == 1)
        // Exhausted: throws, `out` unchanged.
        a.setNonce(UInt64.max)
        let before = out
        expectNoise(.nonceExhausted) { try plain.withUnsafeBytes { try a.encryptWithAd(UnsafeRawBufferPointer(start: nil, count: 0), $0, appendingTo: &out) } }
        #expect(out == before)
        // Without a key the bytes pass through, appended.
        var none = CipherState(cipher: cipher)
        var clear: [UInt8] = [1]
        try plain.withUnsafeBytes { try none.encryptWithAd(UnsafeRawBufferPointer(start: nil, count: 0), $0, appendingTo: &clear) }
        #expect(clear == [1] + plain)
    }

    @Test(arguments: NoiseCipher.allCases)
    func transportAppendingVariantsReuseOneBuffer(cipher: NoiseCipher) throws {
        var (it, rt) = try Pair(cipher: cipher).handshake()
        var (it2, rt2) = (it, rt)
        var sealed: [UInt8] = [], opened: [UInt8] = []
        for size in [0, 1, 100, NoiseTransport.maxPlaintextLength] {
            let plain = (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 7) }
            sealed.removeAll(keepingCapacity: true)
            opened.removeAll(keepingCapacity: true)
            try plain.withUnsafeBytes { try it.encrypt($0, appendingTo: &sealed) }
            #expect(sealed == (try it2.encrypt(plain)), "same bytes as encrypt(_:) at size \(size)")
            try sealed.withUnsafeBytes { try rt.decrypt($0, appendingTo: &opened) }
            #expect(opened == plain)
            _ = try rt2.decrypt(sealed)
        }
        let tooBig = [UInt8](repeating: 0, count: NoiseTransport.maxPlaintextLength + 1)
        sealed = [5]
        expectNoise(.messageTooLarge) { try tooBig.withUnsafeBytes { try it.encrypt($0, appendingTo: &sealed) } }
        let hugeRecord = [UInt8](repeating: 0, count: 65536)
        expectNoise(.messageTooLarge) { try hugeRecord.withUnsafeBytes { try rt.decrypt($0, appendingTo: &sealed) } }
        #expect(sealed == [5])
    }

    /// HKDF of §4.3 equals RFC 5869 HKDF with salt = chaining key and empty info.
    @Test func hkdfMatchesRFC5869WithEmptyInfo() throws {
        let ck = SymmetricKey(data: (0..<32).map { UInt8(255 - $0) })
        for ikm in [[], [1, 2, 3], [UInt8](repeating: 0xab, count: 32), [UInt8](repeating: 5, count: 100)] as [[UInt8]] {
            let out = NoiseHash.hkdf(chainingKey: ck, inputKeyMaterial: ikm, outputs: 3)
            let reference = HKDF<SHA256>.deriveKey(inputKeyMaterial: SymmetricKey(data: ikm), salt: NoiseHash.bytes(ck), info: [UInt8](), outputByteCount: 96)
            #expect(out.flatMap(NoiseHash.bytes) == NoiseHash.bytes(reference))
            let two = NoiseHash.hkdf(chainingKey: ck, inputKeyMaterial: ikm, outputs: 2)
            #expect(two.flatMap(NoiseHash.bytes) == Array(NoiseHash.bytes(reference).prefix(64)))
        }
    }

    @Test func initializeSymmetricPadsShortNamesAndHashesLongOnes() {
        let short = "Noise_NN_25519_AESGCM_SHA256"  // 28 bytes
        let long = "Noise_XXpsk3_25519_ChaChaPoly_SHA256"  // 36 bytes
        #expect(SymmetricState(protocolName: short, cipher: .aesGCM).handshakeHash == Array(short.utf8) + [0, 0, 0, 0])
        #expect(SymmetricState(protocolName: long, cipher: .chaChaPoly).handshakeHash == Array(SHA256.hash(data: Array(long.utf8))))
        let exact = String(repeating: "x", count: 32)
        #expect(SymmetricState(protocolName: exact, cipher: .aesGCM).handshakeHash == Array(exact.utf8))
    }

    @Test func symmetricStateSteps() throws {
        var a = SymmetricState(protocolName: "Noise_XX_25519_AESGCM_SHA256", cipher: .aesGCM)
        var b = a
        let h0 = a.handshakeHash
        a.mixHash([1])
        #expect(a.handshakeHash == Array(SHA256.hash(data: h0 + [1])))
        #expect(try a.encryptAndHash([5]) == [5])  // no key yet: plaintext, still hashed
        b.mixHash([1])
        #expect(try b.decryptAndHash([5]) == [5])
        #expect(a.handshakeHash == b.handshakeHash)
        a.mixKey([3]); b.mixKey([3])
        #expect(a.cipherState.hasKey)
        let c = try a.encryptAndHash([6, 7])
        #expect(c.count == 2 + 16)
        #expect(try b.decryptAndHash(c) == [6, 7])
        a.mixKeyAndHash([8]); b.mixKeyAndHash([8])
        #expect(a.handshakeHash == b.handshakeHash)
        var (a1, a2) = a.split()
        var (b1, b2) = b.split()
        #expect(try b1.decryptWithAd([], a1.encryptWithAd([], [1])) == [1])
        #expect(try a2.decryptWithAd([], b2.encryptWithAd([], [2])) == [2])
        var wrong = b
        expectNoise(.decryptFailed) { _ = try wrong.decryptAndHash(flipped(try a.encryptAndHash([1]), at: 0)) }
    }
}
