// A connection's outbound queue as a value with no I/O: which messages are queued, how many
// bytes, where the next write starts (as iovecs over header and payload views, no joining),
// and which messages a write of n bytes finished. `Connection` owns one and performs the
// writes; tests drive it with byte counts alone.
import GossipWire
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Outbound messages awaiting the kernel, in order, bounded by `maxQueuedBytes`.
struct SendQueue {
    /// A message fully handed to the kernel, with its completion to call.
    struct Finished {
        let message: OutboundMessage
        let completion: ((Bool) -> Void)?
    }

    private struct Item {
        let message: OutboundMessage
        /// The headers of every frame, request id already written, back to back.
        let headers: ByteStorage
        var frame = 0
        var offset = 0
        let completion: ((Bool) -> Void)?
    }

    /// A message is admitted while it fits (or when the queue is empty, so one message larger
    /// than the bound still goes out alone).
    let maxQueuedBytes: Int
    /// Bytes queued and not yet written.
    private(set) var queuedBytes = 0
    /// The most `queuedBytes` has been.
    private(set) var peakQueuedBytes = 0
    private var items: [Item?] = []
    private var head = 0

    init(maxQueuedBytes: Int) { self.maxQueuedBytes = maxQueuedBytes }

    var isEmpty: Bool { head == items.count }
    /// Messages queued (partly written ones included).
    var count: Int { items.count - head }

    /// Whether a message of `wireBytes` would be admitted now.
    func hasRoom(for wireBytes: Int) -> Bool {
        queuedBytes == 0 || queuedBytes + wireBytes <= maxQueuedBytes
    }

    /// Queues `message` (with `requestID` written into every header when given) if it fits;
    /// returns false, queuing nothing, when it does not.
    mutating func enqueue(_ message: OutboundMessage, requestID: UInt32? = nil, completion: ((Bool) -> Void)? = nil) -> Bool {
        let size = message.wireBytes
        guard hasRoom(for: size) else { return false }
        let headers = ByteStorage(count: message.frames.count * FrameHeader.size)
        let base = headers.mutableBytes.baseAddress!
        for (i, f) in message.frames.enumerated() {
            var h = f.header
            if let requestID { h.requestID = requestID }
            h.write(to: base + i * FrameHeader.size)
        }
        items.append(Item(message: message, headers: headers, completion: completion))
        queuedBytes += size
        peakQueuedBytes = Swift.max(peakQueuedBytes, queuedBytes)
        return true
    }

    /// Describes the next bytes to write in `iov` (at most `capacity` entries and about
    /// `maxBytes` bytes); returns the number of entries. The pointers stay valid until the
    /// queue is next mutated.
    func fill(_ iov: UnsafeMutablePointer<iovec>, capacity: Int, maxBytes: Int = 256 << 20) -> Int {
        var n = 0
        var i = head
        var total = 0
        outer: while i < items.count {
            let p = items[i]!
            let hbase = p.headers.bytes.baseAddress!
            var f = p.frame
            var off = p.offset
            let frames = p.message.frames
            while f < frames.count {
                if n + 2 > capacity || total >= maxBytes { break outer }
                let payload = frames[f].payload
                if off < FrameHeader.size {
                    iov[n] = iovec(iov_base: UnsafeMutableRawPointer(mutating: hbase + f * FrameHeader.size + off),
                                   iov_len: FrameHeader.size - off)
                    n += 1
                    total += FrameHeader.size - off
                    off = FrameHeader.size
                }
                let pOff = off - FrameHeader.size
                if pOff < payload.count {
                    iov[n] = iovec(iov_base: UnsafeMutableRawPointer(mutating: payload.bytes.baseAddress! + pOff),
                                   iov_len: payload.count - pOff)
                    n += 1
                    total += payload.count - pOff
                }
                f += 1
                off = 0
            }
            i += 1
        }
        return n
    }

    /// Records that the kernel took `written` bytes; returns the messages that finished, in order.
    mutating func advance(by written: Int) -> [Finished] {
        precondition(written <= queuedBytes, "advanced past the queued bytes")
        var left = written
        var finished: [Finished] = []
        queuedBytes -= written
        while left > 0 && head < items.count {
            var p = items[head]!
            let frames = p.message.frames
            while left > 0 && p.frame < frames.count {
                let frameSize = FrameHeader.size + frames[p.frame].payload.count
                let take = Swift.min(left, frameSize - p.offset)
                p.offset += take
                left -= take
                if p.offset == frameSize { p.frame += 1; p.offset = 0 }
            }
            // A message of empty frames only is finished once its headers are out.
            if p.frame == frames.count {
                items[head] = nil
                head += 1
                finished.append(Finished(message: p.message, completion: p.completion))
            } else {
                items[head] = p
            }
        }
        compact()
        return finished
    }

    /// Empties the queue; returns the completions of the messages that did not go out.
    mutating func removeAll() -> [(Bool) -> Void] {
        let left = items[head...].compactMap { $0?.completion }
        items.removeAll()
        head = 0
        queuedBytes = 0
        return left
    }

    private mutating func compact() {
        if head == items.count {
            items.removeAll(keepingCapacity: true)
            head = 0
        } else if head >= 1024 && head * 2 >= items.count {
            items.removeFirst(head)
            head = 0
        }
    }
}
