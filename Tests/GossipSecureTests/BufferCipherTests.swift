// The record layer's buffer forms of CipherState (encrypt/decrypt into caller memory, key
// export for the key log): same bytes as EncryptWithAd/DecryptWithAd, same nonce rules.
import Crypto
import Testing
@testable import GossipSecure

@Suite struct BufferCipherTests {
    let key = SymmetricKey(data: (0..<32).map { UInt8(255 - $0) })

    @Test(arguments: NoiseCipher.allCases)
    func intoBufferEqualsEncryptWithAd(cipher: NoiseCipher) throws {
        var a = CipherState(cipher: cipher)
        var b = CipherState(cipher: cipher)
        try a.initializeKey(key)
        try b.initializeKey(key)
        let plain = (0..<1000).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        for round in 0..<3 {
            let expected = try a.encryptWithAd([], plain)
            var out = [UInt8](repeating: 0, count: plain.count + 16)
            try plain.withUnsafeBytes { p in try out.withUnsafeMutableBytes { o in try b.encrypt(p, into: o.baseAddress!) } }
            #expect(out == expected, "round \(round)")
            #expect(b.n == a.n)
        }
        // Opening into a buffer: the plaintext, and the nonce moves on.
        var r = CipherState(cipher: cipher)
        try r.initializeKey(key)
        let sealed = try referenceEncrypt(cipher, key: key, n: 0, plain)
        var back = [UInt8](repeating: 0, count: plain.count)
        try sealed.withUnsafeBytes { c in try back.withUnsafeMutableBytes { o in try r.decrypt(c, into: o.baseAddress!) } }
        #expect(back == plain)
        #expect(r.n == 1)
    }

    @Test(arguments: NoiseCipher.allCases)
    func alteredRecordYieldsNoPlaintextAndKeepsTheNonce(cipher: NoiseCipher) throws {
        var r = CipherState(cipher: cipher)
        try r.initializeKey(key)
        var sealed = try referenceEncrypt(cipher, key: key, n: 0, [1, 2, 3, 4])
        sealed[2] ^= 0x01
        var back: [UInt8] = [9, 9, 9, 9]
        expectNoise(.decryptFailed) {
            try sealed.withUnsafeBytes { c in try back.withUnsafeMutableBytes { o in try r.decrypt(c, into: o.baseAddress!) } }
        }
        #expect(back != [1, 2, 3, 4], "no plaintext of a forged record may come out")
        #expect(r.n == 0)
        // Shorter than a tag.
        expectNoise(.decryptFailed) {
            try [UInt8](repeating: 0, count: 15).withUnsafeBytes { c in try back.withUnsafeMutableBytes { o in try r.decrypt(c, into: o.baseAddress!) } }
        }
    }

    @Test func reservedNonceAndMissingKeyThrow() throws {
        var noKey = CipherState(cipher: .aesGCM)
        var out = [UInt8](repeating: 0, count: 32)
        expectNoise(.invalidConfiguration) {
            try [UInt8](repeating: 1, count: 4).withUnsafeBytes { p in try out.withUnsafeMutableBytes { o in try noKey.encrypt(p, into: o.baseAddress!) } }
        }
        #expect(noKey.exportKeyForKeyLog() == nil)
        var cs = CipherState(cipher: .aesGCM)
        try cs.initializeKey(key)
        cs.setNonce(CipherState.maxNonce)
        expectNoise(.nonceExhausted) {
            try [UInt8](repeating: 1, count: 4).withUnsafeBytes { p in try out.withUnsafeMutableBytes { o in try cs.encrypt(p, into: o.baseAddress!) } }
        }
        #expect(cs.n == CipherState.maxNonce)
    }

    /// The BoringSSL fast path passed its self-test here, and the buffer forms agree with the
    /// public API across sizes, nonces and Rekey (so both paths are exercised).
    @Test func fastPathIsActiveAndAgreesWithThePublicAPI() throws {
        #expect(FastAESGCM.selfTestPassed)
        var cs = CipherState(cipher: .aesGCM)
        try cs.initializeKey(key)
        var ref = CipherState(cipher: .aesGCM)
        try ref.initializeKey(key)
        for (i, size) in [1, 15, 16, 17, 1000, 65_519].enumerated() {
            if i == 3 { try cs.rekey(); try ref.rekey() }
            let plain = (0..<size).map { UInt8(truncatingIfNeeded: $0 ^ i) }
            var out = [UInt8](repeating: 0, count: size + 16)
            try plain.withUnsafeBytes { p in try out.withUnsafeMutableBytes { o in try cs.encrypt(p, into: o.baseAddress!) } }
            #expect(out == (try ref.encryptWithAd([], plain)), "size \(size)")
        }
    }

    /// The exported key is the key in use: it seals exactly what the state seals, and it
    /// follows Rekey.
    @Test func exportedKeyIsTheKeyInUse() throws {
        var cs = CipherState(cipher: .aesGCM)
        try cs.initializeKey(key)
        #expect(cs.exportKeyForKeyLog() == (0..<32).map { UInt8(255 - $0) })
        try cs.rekey()
        let k2 = try #require(cs.exportKeyForKeyLog())
        cs.setNonce(5)
        let sealed = try cs.encryptWithAd([], [42])
        #expect(sealed == (try referenceEncrypt(.aesGCM, key: SymmetricKey(data: k2), n: 5, [42])))
    }
}
