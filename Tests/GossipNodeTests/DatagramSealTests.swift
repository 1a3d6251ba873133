// Sealed datagrams (SPEC §13.13): a known-answer vector computed independently (Python
// `cryptography`: HKDF-SHA256 + ChaCha20-Poly1305), tampering, other keys, the window and the
// replay cache with its bound.
@testable import GossipNode
import GossipSecure
import Testing

@Suite struct DatagramSealTests {
    static let key = try! NetworkKey(bytes: Array(0..<32))
    static let nonce: [UInt8] = Array(0xa0...0xab)
    static let ts: UInt64 = 1_700_000_000_000
    static let frame: [UInt8] = Array(0x40..<0x60)
    /// SPEC §13.13's example, computed with Python's `cryptography` (not with this code).
    static let golden = "a0a1a2a3a4a5a6a7a8a9aaab84549c951f617ae4202519b24a5017f4bd504193a17ba97fd2e8c6c8cd37451477af0e5840ca482f4cba5f807f1c41026a7a2421cae5ef3e"

    static func hex(_ b: [UInt8]) -> String { b.map { String(format: "%02x", $0) }.joined() }

    @Test func matchesTheIndependentVector() throws {
        var seal = DatagramSeal(networkKey: Self.key)
        let d = seal.seal(Self.frame, nowMs: Self.ts, nonce: Self.nonce)
        #expect(Self.hex(d) == Self.golden)
        #expect(d.count == Self.frame.count + DatagramSeal.overhead)
        #expect(try seal.open(d, nowMs: Self.ts + 5) == Self.frame)
    }

    @Test func roundTripsWithRandomNonces() throws {
        var a = DatagramSeal(networkKey: Self.key)
        var b = DatagramSeal(networkKey: Self.key)
        let d1 = a.seal([1, 2, 3], nowMs: Self.ts)
        let d2 = a.seal([1, 2, 3], nowMs: Self.ts)
        #expect(d1 != d2, "a fresh nonce per datagram")
        #expect(try b.open(d1, nowMs: Self.ts) == [1, 2, 3])
        #expect(try b.open(d2, nowMs: Self.ts) == [1, 2, 3])
        #expect(try a.open(a.seal([], nowMs: Self.ts), nowMs: Self.ts) == [])
    }

    @Test func refusesTamperedShortAndForeign() throws {
        var seal = DatagramSeal(networkKey: Self.key)
        let d = seal.seal(Self.frame, nowMs: Self.ts, nonce: Self.nonce)
        for i in [0, 11, 12, 19, 20, d.count - 1] {
            var t = d
            t[i] ^= 0x01
            #expect(throws: DatagramSealError.unauthenticated) { try seal.open(t, nowMs: Self.ts) }
        }
        #expect(throws: DatagramSealError.tooShort(35)) { try seal.open(Array(d[0..<35]), nowMs: Self.ts) }
        #expect(throws: DatagramSealError.tooShort(0)) { try seal.open([], nowMs: Self.ts) }
        #expect(throws: DatagramSealError.unauthenticated) { try seal.open(Array(d[0..<36]), nowMs: Self.ts) }
        // A plaintext frame of the same length, and a datagram sealed with another network key.
        #expect(throws: DatagramSealError.unauthenticated) { try seal.open(Array(repeating: 0, count: d.count), nowMs: Self.ts) }
        let other = DatagramSeal(networkKey: NetworkKey.generate())
        #expect(throws: DatagramSealError.unauthenticated) { try seal.open(other.seal(Self.frame, nowMs: Self.ts), nowMs: Self.ts) }
        // Still opens the untouched one: failures leave no state behind.
        #expect(try seal.open(d, nowMs: Self.ts) == Self.frame)
    }

    @Test func refusesOutsideTheWindow() throws {
        var seal = DatagramSeal(networkKey: Self.key, windowMs: 1000)
        let d = seal.seal(Self.frame, nowMs: Self.ts)
        #expect(throws: DatagramSealError.outsideWindow(skewMs: -1001)) { try seal.open(d, nowMs: Self.ts + 1001) }
        #expect(throws: DatagramSealError.outsideWindow(skewMs: 1001)) { try seal.open(d, nowMs: Self.ts - 1001) }
        #expect(try seal.open(d, nowMs: Self.ts + 1000) == Self.frame)
    }

    @Test func refusesReplays() throws {
        var seal = DatagramSeal(networkKey: Self.key)
        let d = seal.seal(Self.frame, nowMs: Self.ts)
        _ = try seal.open(d, nowMs: Self.ts)
        #expect(throws: DatagramSealError.replayed) { try seal.open(d, nowMs: Self.ts + 10) }
        #expect(throws: DatagramSealError.replayed) { try seal.open(d, nowMs: Self.ts + 29_000) }
        // Past the window the window refuses it, and the cache has forgotten it.
        #expect(throws: DatagramSealError.outsideWindow(skewMs: -31_000)) { try seal.open(d, nowMs: Self.ts + 31_000) }
    }

    @Test func replayCacheIsBoundedAndNeverReadmits() throws {
        var seal = DatagramSeal(networkKey: Self.key, windowMs: 10_000, replayCapacity: 8)
        var sent: [[UInt8]] = []
        for i in 0..<100 {
            let d = seal.seal([UInt8(i)], nowMs: Self.ts + UInt64(i))
            sent.append(d)
            #expect(try seal.open(d, nowMs: Self.ts + UInt64(i)) == [UInt8(i)])
        }
        // Every one of them is refused again, although only 8 are remembered.
        for d in sent {
            #expect(throws: DatagramSealError.replayed) { try seal.open(d, nowMs: Self.ts + 100) }
        }
        // A fresh datagram is still accepted.
        #expect(try seal.open(seal.seal([7], nowMs: Self.ts + 200), nowMs: Self.ts + 200) == [7])
    }

    @Test func cacheEntriesExpireWithTheWindow() throws {
        var cache = DatagramSeal.ReplayCache(capacity: 4)
        let n = { (i: UInt8) in DatagramSeal.Nonce(ArraySlice(Array(repeating: i, count: 12))) }
        let a1 = cache.admit(n(1), timestamp: 1000, nowMs: 1000, windowMs: 100)
        let a2 = cache.admit(n(2), timestamp: 1010, nowMs: 1010, windowMs: 100)
        #expect(a1 && a2)
        #expect(cache.count == 2)
        let a3 = cache.admit(n(3), timestamp: 1200, nowMs: 1200, windowMs: 100)
        #expect(a3)
        #expect(cache.count == 1, "the two old entries left with the window")
        #expect(cache.floor == 0, "expiry is not eviction")
    }
}
