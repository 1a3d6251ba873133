// Incremental frame dumping for live traffic (framedump proxy): feed the bytes of one
// direction of one connection as they pass, get each frame's record as soon as it is
// complete (the last frame of a message carries the decoded body). No I/O here.
import GossipWire

/// Decodes one direction of a live stream into frame records.
public final class LiveFrameDump {
    public let direction: String?
    private let decoder: MessageDecoder
    private let limits: Limits
    private var pending: [FrameRecord] = []
    private var ends: [Int] = []
    /// The first malformed-frame error; after it the direction is no longer decoded.
    public private(set) var error: WireError?

    public init(direction: String?, limits: Limits = .default, headBytes: Int = 64) {
        self.direction = direction
        self.limits = limits
        self.decoder = MessageDecoder(limits: limits)
        decoder.onFrame = { [unowned self] f in
            pending.append(FrameRecord(header: f.header, offset: f.streamOffset, direction: direction,
                                       payloadHead: Array(f.payload.prefix(headBytes)), body: nil))
            if f.header.flags.contains(.endStream) { ends.append(pending.count - 1) }
        }
    }

    /// Feeds bytes; returns the frames completed by them, in stream order.
    public func feed(_ bytes: [UInt8]) -> [FrameRecord] {
        guard error == nil else { return [] }
        do {
            try decoder.append(bytes)
        } catch let e {
            error = e
        }
        var k = 0
        while let m = decoder.nextMessage() {
            let body: Result<MessageBody, WireError> = Result { () throws(WireError) in try MessageBody.decode(m, limits: limits) }
            if k < ends.count { pending[ends[k]].body = body }
            k += 1
        }
        // Frames of a message still in progress are returned as soon as they are complete.
        let out = pending
        pending.removeAll(keepingCapacity: true)
        ends.removeAll(keepingCapacity: true)
        return out
    }

    /// Declares the end of the stream: a frame or chunked message left unfinished becomes
    /// `error` (`.truncated`), unless an earlier error stands.
    public func finish() {
        guard error == nil else { return }
        do { try decoder.finish() } catch let e { error = e }
    }
}
