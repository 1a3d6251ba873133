// AES-256-GCM sealing and opening into caller memory for the record layer (CGossipAEAD: the
// BoringSSL inside swift-crypto, without the `Data` results and SealedBox copies of the
// public API, which measured about as costly as the cipher on 64 KiB records). Used only when
// a self-test shows it gives exactly swift-crypto's public-API bytes; otherwise CipherState
// keeps to the public API.
import CGossipAEAD
import Crypto
import Foundation

/// One keyed AES-256-GCM context. Immutable after creation; several threads may seal or open
/// with it at once (BoringSSL's EVP_AEAD_CTX is read-only during seal/open).
final class FastAESGCM: @unchecked Sendable {
    private let ctx: UnsafeMutableRawPointer

    /// nil when the fast path is unavailable (self-test failed) or BoringSSL refused the key.
    init?(key: SymmetricKey) {
        guard FastAESGCM.selfTestPassed else { return nil }
        guard let c = key.withUnsafeBytes({ k in gossip_aesgcm_new(k.bindMemory(to: UInt8.self).baseAddress) }) else { return nil }
        ctx = c
    }

    private init?(rawKey: [UInt8]) {
        guard let c = rawKey.withUnsafeBufferPointer({ gossip_aesgcm_new($0.baseAddress) }) else { return nil }
        ctx = c
    }

    deinit { gossip_aesgcm_free(ctx) }

    /// Seals into `out` (plaintext.count + 16 bytes). Returns false on a library failure.
    func seal(nonce: UInt64, plaintext: UnsafeRawBufferPointer, ad: UnsafeRawBufferPointer, into out: UnsafeMutableRawPointer) -> Bool {
        var n = FastAESGCM.nonce(nonce)
        return withUnsafeBytes(of: &n) { nb in
            gossip_aesgcm_seal(ctx, out.assumingMemoryBound(to: UInt8.self), nb.bindMemory(to: UInt8.self).baseAddress,
                               plaintext.bindMemory(to: UInt8.self).baseAddress, plaintext.count,
                               ad.bindMemory(to: UInt8.self).baseAddress, ad.count) == 1
        }
    }

    /// Opens into `out` (ciphertext.count - 16 bytes); false when the tag does not verify
    /// (then `out` holds no plaintext).
    func open(nonce: UInt64, ciphertext: UnsafeRawBufferPointer, ad: UnsafeRawBufferPointer, into out: UnsafeMutableRawPointer) -> Bool {
        var n = FastAESGCM.nonce(nonce)
        return withUnsafeBytes(of: &n) { nb in
            gossip_aesgcm_open(ctx, out.assumingMemoryBound(to: UInt8.self), nb.bindMemory(to: UInt8.self).baseAddress,
                               ciphertext.bindMemory(to: UInt8.self).baseAddress, ciphertext.count,
                               ad.bindMemory(to: UInt8.self).baseAddress, ad.count) == 1
        }
    }

    /// The AESGCM nonce of Noise §12.4: 32 zero bits, then n big-endian (12 bytes).
    /// Three UInt32 (12 bytes, no padding): 0, then the high and low halves big-endian.
    private static func nonce(_ n: UInt64) -> (UInt32, UInt32, UInt32) {
        (0, UInt32(truncatingIfNeeded: n >> 32).bigEndian, UInt32(truncatingIfNeeded: n).bigEndian)
    }

    /// Whether this path gives exactly what swift-crypto's public API gives (seal of several
    /// sizes and nonces, open of it, refusal of an altered byte). Run once per process.
    static let selfTestPassed: Bool = {
        let keyBytes = (0..<32).map { UInt8(truncatingIfNeeded: $0 &* 13 &+ 7) }
        guard let fast = FastAESGCM(rawKey: keyBytes) else { return false }
        let key = SymmetricKey(data: keyBytes)
        for (size, n) in [(0, UInt64(0)), (1, 1), (17, 0x0102_0304_0506_0708), (4096, UInt64.max - 1)] {
            let plain = (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 3) }
            let ad: [UInt8] = size % 2 == 0 ? [] : [9, 8, 7]
            let nonceBytes = [0, 0, 0, 0] + withUnsafeBytes(of: n.bigEndian) { Array($0) }
            guard let reference = try? AES.GCM.seal(plain, using: key, nonce: AES.GCM.Nonce(data: nonceBytes), authenticating: ad) else { return false }
            let expected = Array(reference.ciphertext) + Array(reference.tag)
            var sealed = [UInt8](repeating: 0, count: size + 16)
            let ok = plain.withUnsafeBytes { p in ad.withUnsafeBytes { a in sealed.withUnsafeMutableBytes { o in
                fast.seal(nonce: n, plaintext: p, ad: a, into: o.baseAddress!) } } }
            guard ok, sealed == expected else { return false }
            var opened = [UInt8](repeating: 0, count: size + 1)
            let back = sealed.withUnsafeBytes { c in ad.withUnsafeBytes { a in opened.withUnsafeMutableBytes { o in
                fast.open(nonce: n, ciphertext: c, ad: a, into: o.baseAddress!) } } }
            guard back, Array(opened[0..<size]) == plain else { return false }
            sealed[sealed.count - 1] ^= 1
            let forged = sealed.withUnsafeBytes { c in ad.withUnsafeBytes { a in opened.withUnsafeMutableBytes { o in
                fast.open(nonce: n, ciphertext: c, ad: a, into: o.baseAddress!) } } }
            guard !forged else { return false }
        }
        return true
    }()
}
