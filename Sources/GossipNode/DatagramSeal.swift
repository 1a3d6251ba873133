// Sealed datagrams (SPEC §13.13): how a node with a network key protects what it sends over UDP
// (SWIM probes, LAN announcements). TCP has the Noise channel (§13); a datagram has no
// handshake, so each one is sealed on its own with a key derived from the network key:
//
//   datagram = nonce(12) || ChaChaPoly(key, nonce, u64 timestamp_ms || frame, ad = "gossip/2 datagram")
//   key      = HKDF-SHA256(ikm = network key, salt = "" , info = "gossip/2 datagram key", L = 32)
//
// The nonce is 12 random bytes (every member seals with the same key, so no counter can be
// kept unique across senders; 96 random bits make a repeat negligible below 2^40 datagrams).
// The timestamp (sender's wall clock, Unix milliseconds) is inside the sealed bytes, so an
// outsider cannot change it.
//
// Threat model (the SPEC text is normative):
// - Defended: outsiders (no network key) can neither read nor forge nor alter a datagram; a
//   datagram that fails authentication is dropped before any byte of it is decoded. Replays:
//   a datagram older or newer than `windowMs` (clock difference included) is refused, and
//   within the window each (nonce) is accepted once per receiver (a bounded replay cache; when
//   it is full the oldest entries leave and everything not newer than them is refused, so an
//   evicted datagram can never come back). SWIM adds probe sequence numbers and names the
//   target in every probe, so a replayed datagram sent to another member is ignored there.
// - Not defended: insiders (anyone with the network key can seal anything, including false
//   membership updates); traffic analysis (sizes, timing and who talks to whom are visible);
//   flooding (every datagram costs the receiver one AEAD verification before it is dropped);
//   clocks further apart than the window (a node whose clock is off by more than `windowMs`
//   has all its datagrams dropped and will be suspected: run NTP).
import Crypto
import Foundation
import GossipSecure

/// Why a sealed datagram was refused. Every case means "drop it and count it"; none is sent back.
public enum DatagramSealError: Error, Equatable, Sendable, CustomStringConvertible {
    /// Shorter than nonce + timestamp + tag: not a sealed datagram.
    case tooShort(Int)
    /// Authentication failed: another key, altered bytes, or a plaintext datagram.
    case unauthenticated
    /// The timestamp is outside the window around this node's clock (`skewMs` = theirs - ours).
    case outsideWindow(skewMs: Int64)
    /// This nonce was already accepted (or is older than what the full replay cache remembers).
    case replayed

    public var description: String {
        switch self {
        case .tooShort(let n): return "datagram of \(n) bytes is shorter than the \(DatagramSeal.overhead) bytes of a sealed datagram"
        case .unauthenticated: return "datagram failed authentication (another network key, altered, or not sealed)"
        case .outsideWindow(let skew): return "datagram timestamp is \(skew) ms from this node's clock, outside the replay window: check the clocks (NTP)"
        case .replayed: return "datagram was already received (replay)"
        }
    }
}

/// Seals and opens datagrams with a key derived from the network key (SPEC §13.13).
///
/// `seal` needs no state. `open` is `mutating`: it remembers the nonces it accepted inside the
/// window (at most `replayCapacity`), so keep one value per socket behind the owner's lock.
public struct DatagramSeal: Sendable {
    /// Bytes of the random nonce that starts every sealed datagram.
    public static let nonceBytes = 12
    /// Bytes of the sealed timestamp in front of the frame.
    public static let timestampBytes = 8
    /// Bytes of the Poly1305 tag at the end.
    public static let tagBytes = 16
    /// What sealing adds to a frame: 36 bytes.
    public static let overhead = nonceBytes + timestampBytes + tagBytes
    /// The AEAD associated data.
    public static let associatedData: [UInt8] = Array("gossip/2 datagram".utf8)
    /// The HKDF info string of the datagram key.
    public static let keyInfo: [UInt8] = Array("gossip/2 datagram key".utf8)
    /// Default replay window: a datagram more than this far from the receiver's clock is refused.
    public static let defaultWindowMs: UInt64 = 30_000
    /// Default number of accepted nonces remembered.
    public static let defaultReplayCapacity = 16_384

    private let key: SymmetricKey
    /// Half-width of the acceptance window, milliseconds.
    public let windowMs: UInt64
    private var replay: ReplayCache

    /// A seal for `networkKey`.
    /// - Parameters:
    ///   - windowMs: datagrams whose timestamp differs from the receiver's clock by more are refused.
    ///   - replayCapacity: nonces remembered; bounds the memory of `open` (about 40 bytes each).
    public init(networkKey: NetworkKey, windowMs: UInt64 = DatagramSeal.defaultWindowMs,
                replayCapacity: Int = DatagramSeal.defaultReplayCapacity) {
        key = Self.deriveKey(networkKey)
        self.windowMs = windowMs
        replay = ReplayCache(capacity: max(1, replayCapacity))
    }

    /// The datagram key: HKDF-SHA256(ikm = network key, salt = empty, info = "gossip/2 datagram key", 32 bytes).
    static func deriveKey(_ networkKey: NetworkKey) -> SymmetricKey {
        HKDF<SHA256>.deriveKey(inputKeyMaterial: networkKey.symmetricKey, salt: [UInt8](),
                               info: keyInfo, outputByteCount: 32)
    }

    /// The wall clock in Unix milliseconds, the timestamp `seal` and `open` use in a node.
    public static func wallClockMs() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return UInt64(max(0, ts.tv_sec)) &* 1000 &+ UInt64(max(0, ts.tv_nsec)) / 1_000_000
    }

    /// Seals `frame` with a fresh random nonce and the timestamp `nowMs`.
    public func seal(_ frame: [UInt8], nowMs: UInt64) -> [UInt8] {
        var nonce = [UInt8](repeating: 0, count: Self.nonceBytes)
        var rng = SystemRandomNumberGenerator()
        for i in nonce.indices { nonce[i] = UInt8.random(in: 0...255, using: &rng) }
        return seal(frame, nowMs: nowMs, nonce: nonce)
    }

    /// Seals with a given nonce: for golden vectors and tests only (a nonce must never repeat).
    func seal(_ frame: [UInt8], nowMs: UInt64, nonce: [UInt8]) -> [UInt8] {
        precondition(nonce.count == Self.nonceBytes)
        var plaintext = [UInt8]()
        plaintext.reserveCapacity(Self.timestampBytes + frame.count)
        for i in 0..<8 { plaintext.append(UInt8(truncatingIfNeeded: nowMs >> (8 * UInt64(i)))) }
        plaintext.append(contentsOf: frame)
        // Nonce(data:) and seal only fail for a wrong nonce length, excluded above.
        let box = try! ChaChaPoly.seal(plaintext, using: key, nonce: ChaChaPoly.Nonce(data: nonce),
                                       authenticating: Self.associatedData)
        var out = nonce
        out.reserveCapacity(Self.overhead + frame.count)
        out.append(contentsOf: box.ciphertext)
        out.append(contentsOf: box.tag)
        return out
    }

    /// Authenticates `datagram`, checks its timestamp against `nowMs` and the replay cache,
    /// and returns the frame inside. Nothing is decoded before authentication succeeds, and
    /// only an authenticated datagram enters the replay cache.
    /// - Throws: `DatagramSealError`; the caller drops the datagram and counts it.
    public mutating func open(_ datagram: [UInt8], nowMs: UInt64) throws(DatagramSealError) -> [UInt8] {
        let (frame, ts, nonce) = try authenticate(datagram)
        let skew = Int64(bitPattern: ts &- nowMs)
        if (ts > nowMs ? ts - nowMs : nowMs - ts) > windowMs { throw .outsideWindow(skewMs: skew) }
        guard replay.admit(nonce, timestamp: ts, nowMs: nowMs, windowMs: windowMs) else { throw .replayed }
        return frame
    }

    /// Decrypts and authenticates only (no window, no replay cache): returns frame, timestamp, nonce.
    func authenticate(_ datagram: [UInt8]) throws(DatagramSealError) -> ([UInt8], UInt64, Nonce) {
        guard datagram.count >= Self.overhead else { throw .tooShort(datagram.count) }
        let n = Self.nonceBytes
        let body = datagram[n..<(datagram.count - Self.tagBytes)]
        let tag = datagram[(datagram.count - Self.tagBytes)...]
        let plain: Data
        do {
            let box = try ChaChaPoly.SealedBox(nonce: ChaChaPoly.Nonce(data: datagram[0..<n]), ciphertext: body, tag: tag)
            plain = try ChaChaPoly.open(box, using: key, authenticating: Self.associatedData)
        } catch {
            throw .unauthenticated
        }
        let bytes = [UInt8](plain)
        var ts: UInt64 = 0
        for i in 0..<8 { ts |= UInt64(bytes[i]) << (8 * UInt64(i)) }
        return (Array(bytes[8...]), ts, Nonce(datagram[0..<n]))
    }

    /// A 96-bit nonce as two integers (hashable without an array allocation per entry).
    struct Nonce: Hashable, Sendable {
        let hi: UInt64
        let lo: UInt32
        init(_ b: ArraySlice<UInt8>) {
            var h: UInt64 = 0, l: UInt32 = 0
            let s = b.startIndex
            for i in 0..<8 { h |= UInt64(b[s + i]) << (8 * UInt64(i)) }
            for i in 0..<4 { l |= UInt32(b[s + 8 + i]) << (8 * UInt32(i)) }
            hi = h
            lo = l
        }
    }

    /// Accepted nonces inside the window, in arrival order, at most `capacity`.
    ///
    /// Invariant: a nonce that was accepted is refused later, either because it is still in
    /// `seen`, or because its timestamp is outside the window, or because it is ≤ `floor`
    /// (the newest timestamp ever evicted while still inside the window).
    struct ReplayCache: Sendable {
        let capacity: Int
        private(set) var seen: Set<Nonce> = []
        private var order: [(nonce: Nonce, ts: UInt64)] = []
        private var head = 0
        private(set) var floor: UInt64 = 0

        init(capacity: Int) { self.capacity = capacity }

        var count: Int { seen.count }

        mutating func admit(_ nonce: Nonce, timestamp ts: UInt64, nowMs: UInt64, windowMs: UInt64) -> Bool {
            // Forget entries that have left the window: the window check refuses them anyway.
            let oldest = nowMs > windowMs ? nowMs - windowMs : 0
            while head < order.count, order[head].ts < oldest {
                seen.remove(order[head].nonce)
                head += 1
            }
            if floor > 0 && ts <= floor { return false }
            if seen.contains(nonce) { return false }
            if seen.count >= capacity {
                let e = order[head]
                seen.remove(e.nonce)
                head += 1
                floor = max(floor, e.ts)
                if ts <= floor { return false }
            }
            seen.insert(nonce)
            order.append((nonce, ts))
            if head > 1024 && head * 2 > order.count {
                order.removeFirst(head)
                head = 0
            }
            return true
        }
    }
}
