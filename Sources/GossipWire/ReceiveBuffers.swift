// The process's receive memory (issue 8, defect 1): one budget that every large receive
// buffer of every connection is charged to, and one pool of released message buffers for
// reuse, trimmed when idle so the process's RSS falls back after a burst.
//
// Threat model: a peer may declare messages up to the per-type limits (`Limits`) on as many
// connections as the server admits. Each connection's own allocations are bounded by those
// limits; together they are bounded here. A buffer that does not fit the budget is refused
// (the decoder throws RESOURCE_EXHAUSTED and the connection is closed, SPEC §11) instead of
// waiting, so a stalled sender can never make an honest one wait for memory. What is not
// defended: many small (uncharged) buffers, bounded instead by connection count times
// `uncharged` bytes, and memory the application keeps after a message was delivered (it stays
// charged until released, which is the point).
#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// A budget for receive buffers, shared by every decoder that uses it, and a pool of
/// released large buffers. Thread-safe.
public final class ReceiveBuffers: Sendable {
    /// The one budget of this process; nodes set it from their model (`setBudget`). The
    /// default (2 GiB) holds two messages of the default `maxMessageBytes`.
    public static let shared = ReceiveBuffers(budget: 2 << 30)

    /// Buffers of at most this many bytes are not charged (a connection's header staging,
    /// control messages): whatever the budget, small requests such as Status are served.
    public static let uncharged = 64 << 10
    /// Smallest buffer kept for reuse: below it malloc recycles memory quickly itself.
    static let poolThreshold = 1 << 20
    /// Most buffers the pool keeps.
    static let poolEntries = 4

    private let budgetBytes: Atomic<Int>
    private let charged = Atomic<Int>(0)
    private let peak = Atomic<Int>(0)
    private let refused = Atomic<Int>(0)
    /// Set when charged memory was freed since the last `trim`, so trimming asks malloc to
    /// return it to the system.
    private let freedSinceTrim = Atomic<Bool>(false)
    private struct Pool {
        var entries: [ByteStorage] = []
        var bytes = 0
        var lastUse = ContinuousClock.now
    }
    private let pool = Mutex(Pool())

    /// - Parameter budget: most bytes of charged buffers alive at once (pooled ones included).
    public init(budget: Int) {
        budgetBytes = Atomic(Swift.max(0, budget))
    }

    /// The budget for a node whose model messages are at most `modelMessageBytes`: two of
    /// them (an exchange request arriving while this node's own exchange reply does) plus
    /// 32 MiB for everything else large (compressed chunks, other connections' traffic).
    public static func budget(forModelMessageBytes modelMessageBytes: Int) -> Int {
        2 * modelMessageBytes + (32 << 20)
    }

    /// The current budget in bytes.
    public var budget: Int { budgetBytes.load(ordering: .relaxed) }

    /// Sets the budget (e.g. from the node's model size). Buffers alive beyond a lowered
    /// budget stay valid; new ones are refused until enough are freed.
    public func setBudget(_ bytes: Int) {
        budgetBytes.store(Swift.max(0, bytes), ordering: .relaxed)
    }

    /// Bytes of charged buffers alive now: held by messages in flight or by the application,
    /// or pooled.
    public var chargedBytes: Int { charged.load(ordering: .relaxed) }
    /// The most `chargedBytes` has been.
    public var peakChargedBytes: Int { peak.load(ordering: .relaxed) }
    /// Bytes the pool keeps (some may still be held by the application).
    public var pooledBytes: Int { pool.withLock { $0.bytes } }
    /// Buffers refused because they did not fit the budget.
    public var refusedCount: Int { refused.load(ordering: .relaxed) }

    /// A buffer of exactly `count` bytes: a pooled one the application has released, else a
    /// new one charged to the budget. Returns nil (and counts a refusal) when it does not fit
    /// even after dropping the pool's free buffers.
    public func take(count: Int) -> ByteStorage? {
        if count <= ReceiveBuffers.uncharged { return ByteStorage(count: count) }
        let reused: ByteStorage? = pool.withLock { p in
            p.lastUse = .now
            var i = p.entries.count - 1
            while i >= 0 {
                if p.entries[i].count == count && isKnownUniquelyReferenced(&p.entries[i]) {
                    p.bytes -= count
                    return p.entries.remove(at: i)
                }
                i -= 1
            }
            return nil
        }
        if let reused {
            // Pair with the application's release of its last reference (on any thread)
            // before this buffer is overwritten.
            atomicMemoryFence(ordering: .acquiring)
            return reused
        }
        if !reserve(count) {
            // Free memory the pool holds, then try once more.
            let dropped = dropFreePooled()
            withExtendedLifetime(dropped) {}
            guard reserve(count) else {
                refused.add(1, ordering: .relaxed)
                return nil
            }
        }
        return ByteStorage(count: count, chargedTo: self)
    }

    /// Keeps a delivered message's buffer for reuse once the application drops it. Only
    /// buffers charged here, of at least `poolThreshold` bytes; the oldest entries go first.
    public func offer(_ storage: ByteStorage) {
        guard storage.ledger === self, storage.count >= ReceiveBuffers.poolThreshold,
              storage.count <= budget / 2 else { return }
        let evicted: [ByteStorage] = pool.withLock { p in
            p.lastUse = .now
            p.entries.append(storage)
            p.bytes += storage.count
            var out: [ByteStorage] = []
            while p.entries.count > ReceiveBuffers.poolEntries || p.bytes > budget / 2 {
                let e = p.entries.removeFirst()
                p.bytes -= e.count
                out.append(e)
            }
            return out
        }
        withExtendedLifetime(evicted) {}   // freed here, outside the lock
    }

    /// When the pool has not been used for `idle`: drops its buffers the application has
    /// released and, if charged memory was freed since the last trim, asks malloc to return
    /// free memory to the system (`malloc_trim`). Returns the pooled bytes dropped.
    @discardableResult
    public func trim(ifIdleFor idle: Duration = .zero) -> Int {
        let isIdle = pool.withLock { ContinuousClock.now - $0.lastUse >= idle }
        guard isIdle else { return 0 }
        let dropped = dropFreePooled()
        let bytes = dropped.reduce(0) { $0 + $1.count }
        withExtendedLifetime(dropped) {}
        if freedSinceTrim.exchange(false, ordering: .relaxed) || bytes > 0 {
            #if canImport(Glibc)
            _ = c_malloc_trim(0)
            #endif
        }
        return bytes
    }

    // MARK: internals

    private func reserve(_ count: Int) -> Bool {
        var current = charged.load(ordering: .relaxed)
        while true {
            guard current + count <= budget else { return false }
            let (exchanged, original) = charged.compareExchange(expected: current, desired: current + count,
                                                                ordering: .relaxed)
            if exchanged {
                var p = peak.load(ordering: .relaxed)
                while p < current + count {
                    let (done, now) = peak.compareExchange(expected: p, desired: current + count, ordering: .relaxed)
                    if done { break }
                    p = now
                }
                return true
            }
            current = original
        }
    }

    /// Called by a charged storage's `deinit`.
    func credit(_ count: Int) {
        charged.subtract(count, ordering: .relaxed)
        freedSinceTrim.store(true, ordering: .relaxed)
    }

    /// Removes the pool's entries nobody else references; the caller drops them outside the lock.
    private func dropFreePooled() -> [ByteStorage] {
        pool.withLock { p in
            var out: [ByteStorage] = []
            var i = p.entries.count - 1
            while i >= 0 {
                if isKnownUniquelyReferenced(&p.entries[i]) {
                    p.bytes -= p.entries[i].count
                    out.append(p.entries.remove(at: i))
                }
                i -= 1
            }
            return out
        }
    }
}

#if canImport(Glibc)
// <malloc.h> is not part of Glibc's module map; bind malloc_trim by its symbol.
@_silgen_name("malloc_trim")
private func c_malloc_trim(_ pad: Int) -> Int32
#endif
