// A sender's reusable output buffer. Encoding a 40 MB model into a freshly allocated buffer
// costs more in page faults (the kernel zero-fills every new page on first touch) than the
// one copy of the weights itself; a sender that encodes into the buffer it used last time
// pays only the copy. The buffer is reused only when nothing else still references it, so a
// payload (or a frame view of it) that is still queued for sending is never overwritten.

/// An encoder output buffer that is reused once the payload it last produced is released.
///
/// Pass it to the `encode(..., into:)` variants of the model-carrying messages. Each encode
/// asks for `storage(minimumCount:)`: the held storage is returned when it is large enough and
/// uniquely referenced (`isKnownUniquelyReferenced`: the previous payload, its
/// `OutboundMessage` and every `ByteSlice` view of it have been dropped); otherwise a new
/// storage is allocated and held from then on, and the old one lives as long as its users.
///
/// Not thread-safe: one owner (e.g. a peer's send path on its serial queue) uses it.
public final class PayloadBuffer {
    private var held: ByteStorage?
    /// How many `storage(minimumCount:)` calls were served by the held storage.
    public private(set) var reuseCount = 0
    /// How many allocated a new storage.
    public private(set) var allocationCount = 0

    /// An empty buffer; the first encode allocates.
    public init() {}

    /// Adopts a caller-provided storage. The caller should drop its own reference so that
    /// the storage can be recognised as free for reuse.
    public init(storage: ByteStorage) { held = storage }

    /// Bytes the held storage can take without allocating (0 when none is held).
    public var capacity: Int { held?.count ?? 0 }

    /// True when the held storage is not referenced by anything else (a payload in flight).
    public var isFree: Bool {
        guard held != nil else { return false }
        return isKnownUniquelyReferenced(&held!)
    }

    /// A storage of at least `count` bytes (uninitialized, never zero-filled), for one encode.
    /// Only the first `count` bytes belong to the payload; the rest is ignored.
    public func storage(minimumCount count: Int) -> ByteStorage {
        if held != nil, held!.count >= count, isKnownUniquelyReferenced(&held!) {
            reuseCount += 1
            return held!
        }
        allocationCount += 1
        let s = ByteStorage(count: count)
        held = s
        return s
    }
}
