// Work on the independent chunks of one message on all cores: deflate and CRC-32 of a
// sender's chunks (`OutboundMessage`), inflate of a receiver's chunks (`MessageDecoder`).
//
// This is GossipWire's only use of Dispatch, and it is compute only: `concurrentPerform` over
// chunks and a private concurrent queue for inflating received chunks while the next one
// arrives. No sources, no I/O (the module rule is about I/O: GossipNet owns sockets).
import Dispatch
import Synchronization

/// How many cores chunk work may use, and the helpers that spread it.
public enum ParallelChunks {
    /// Cores this process may use (at least 1).
    public static let cores: Int = Swift.max(1, ProcessInfoCores.active)

    /// Most chunks of one message worked on at once (the default: every core). Set to 1 to
    /// measure one core (gossip-bench `zlib_parallel_speedup`); tests leave it alone.
    public static var width: Int {
        get { widthValue.load(ordering: .relaxed) }
        set { widthValue.store(Swift.max(1, newValue), ordering: .relaxed) }
    }
    private static let widthValue = Atomic<Int>(cores)

    /// Runs `body(i)` for every `i` in `0..<count`, on up to `width` threads; returns when all ran.
    static func forEach(_ count: Int, _ body: (Int) -> Void) {
        let w = Swift.min(width, count)
        if w <= 1 {
            for i in 0..<count { body(i) }
            return
        }
        // `w` workers, each taking the next index: balances chunks of unequal cost.
        let next = Atomic<Int>(0)
        withoutActuallyEscaping(body) { body in
            let box = UncheckedBox(body)
            DispatchQueue.concurrentPerform(iterations: w) { _ in
                while true {
                    let i = next.add(1, ordering: .relaxed).oldValue
                    if i >= count { return }
                    box.value(i)
                }
            }
        }
    }

    /// The queue received chunks are inflated on.
    static let inflateQueue = DispatchQueue(label: "gossip.wire.inflate", qos: .userInitiated, attributes: .concurrent)
}

/// A non-Sendable value handed to workers that use it under a rule the compiler cannot see
/// (each worker touches disjoint indices).
struct UncheckedBox<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Online CPUs via sysconf (GossipWire does not import Foundation).
enum ProcessInfoCores {
    static var active: Int {
        #if canImport(Glibc) || canImport(Darwin)
        return Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))
        #else
        return 1
        #endif
    }
}

/// The chunks of one received message being inflated on `ParallelChunks.inflateQueue` while
/// the connection receives the next ones. At most `width` are in flight (each holds its
/// compressed bytes, a buffer charged to the receive budget); `submit` waits for a free slot,
/// which is the back-pressure. Each job writes only its own chunk's range of the message.
final class InflateJobs: @unchecked Sendable {
    private let group = DispatchGroup()
    private let slots: DispatchSemaphore
    private let firstError = Mutex<WireError?>(nil)

    init(width: Int) { slots = DispatchSemaphore(value: width) }

    /// Inflates `source[0..<count]` into `destination[range]` (un-shuffling when `shuffled`).
    func submit(source: ByteStorage, count: Int, destination: ByteStorage, range: Range<Int>,
                shuffled: Bool, offset: Int) {
        slots.wait()
        group.enter()
        ParallelChunks.inflateQueue.async { [self] in
            defer { slots.signal(); group.leave() }
            if firstError.withLock({ $0 != nil }) { return }
            do throws(WireError) {
                try Compression.inflate(UnsafeRawBufferPointer(rebasing: source.bytes[0..<count]),
                                        into: UnsafeMutableRawBufferPointer(rebasing: destination.mutableBytes[range]),
                                        shuffled: shuffled, at: offset)
            } catch {
                let e = error
                firstError.withLock { if $0 == nil { $0 = e } }
            }
        }
    }

    /// The first error a finished job reported, without waiting.
    var failure: WireError? { firstError.withLock { $0 } }

    /// Waits for every submitted job; returns the first error (in completion order).
    func wait() -> WireError? {
        group.wait()
        return failure
    }
}
