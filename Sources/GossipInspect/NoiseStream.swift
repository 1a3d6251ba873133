// Reading Noise sessions (SPEC §13, contract A of issue 9) out of captured or proxied byte
// streams: recognises the handshake of Noise_XXpsk3_25519_AESGCM_SHA256 at the start of a
// TCP direction (initiator `00 30` + 48 bytes then `00 40` + 64; responder `00 60` + 96),
// splits the rest into records (`u16be L` + L bytes, 17 <= L <= 65535), and, when a key log
// names the session, opens each direction's records in order (nonce = record number; Rekey
// after the record whose (n + 1) % 65536 == 0, as the sender does) and feeds the plaintext to
// the ordinary frame decoding, so frames print exactly as in a plaintext session. Without
// keys it reports the handshake and one item per record. No I/O here: the key log comes from
// a closure (a fixed log for files, a re-read file for the live proxy).
//
// Threat note: framedump reads hostile bytes. A record is at most 2 + 65535 bytes, so what a
// direction buffers is bounded by that plus what arrived in one call; records held back while
// a session's keys are not (yet) in the key log are bounded by `pendingLimit` in all.
import Crypto
import GossipSecure
import GossipWire

/// A Noise handshake message or transport record as framedump shows it.
public struct NoiseItem: Sendable, Equatable {
    public enum Kind: Sendable, Equatable {
        /// Handshake message 1, 2 or 3; `ephemeral` is the sender's ephemeral public key,
        /// sent in clear in messages 1 and 2 (empty for message 3).
        case handshake(message: Int, ephemeral: [UInt8])
        /// A transport record that is not shown as frames (see `RecordStatus`).
        case record(number: UInt64, status: RecordStatus)
    }

    /// Why a record is shown as a record rather than as the frames it carries.
    public enum RecordStatus: String, Sendable, Equatable {
        /// No key log was given.
        case noKeyLog = "no_key_log"
        /// The key log does not name this session.
        case notInKeyLog = "not_in_key_log"
        /// The record did not open with the session's keys; its direction stops here.
        case failedAuthentication = "failed_authentication"

        /// How a text line says it.
        public var text: String {
            switch self {
            case .noKeyLog: "encrypted, no key log"
            case .notInKeyLog: "encrypted, not in the key log"
            case .failedAuthentication: "failed authentication"
            }
        }
    }

    /// Stream offset of the 2-byte length prefix (in the bytes as sent on TCP).
    public var offset: Int
    public var direction: String?
    /// The message's length after its prefix (for a record: the ciphertext with its tag).
    public var length: Int
    public var kind: Kind

    public init(offset: Int, direction: String?, length: Int, kind: Kind) {
        self.offset = offset
        self.direction = direction
        self.length = length
        self.kind = kind
    }
}

/// One thing framedump prints, in stream order per direction.
public enum DumpItem {
    /// A frame (of a plaintext stream, or decrypted from Noise records).
    case frame(FrameRecord)
    /// A Noise handshake message or an undecrypted record.
    case noise(NoiseItem)
}

/// Decodes both directions of one connection (or one lone stream), plaintext or Noise.
///
/// Feed each direction's bytes in order as they arrive (any split), then call `finish()`
/// once. Each call returns what became printable. Not thread-safe: one owner.
public final class ConnectionDump {
    /// One direction of the connection. Either may carry the initiator (the side that sends
    /// `00 30` + 48 bytes): roles are read from the bytes.
    public enum Side: Int, Sendable, CaseIterable { case first = 0, second = 1 }

    /// An item and the direction it belongs to.
    public struct Output {
        public var side: Side
        public var item: DumpItem
    }

    /// The Noise record layer's numbers (contract A).
    public static let handshakeLengths: [Role: [Int]] = [.initiator: [48, 64], .responder: [96]]
    public static let minRecordLength = 17
    public static let rekeyInterval: UInt64 = 65536

    /// Which Noise role a direction plays.
    public enum Role: Sendable, Equatable { case initiator, responder }

    private enum Mode { case undecided, plaintext, noise(Role) }
    private enum Keys { case noKeyLog, unresolved, resolved(NoiseSessionKeys), notFound }

    private final class Direction {
        let label: String?
        let frames: LiveFrameDump
        var mode = Mode.undecided
        var buffer: [UInt8] = []
        var head = 0             // first unread byte of `buffer`
        var base = 0             // stream offset of buffer[0]
        var handshakes = 0       // handshake messages of this direction read
        var ephemeral: [UInt8]?
        var nextRecord: UInt64 = 0
        var cipher: CipherState?
        var pending: [(offset: Int, number: UInt64, body: [UInt8])] = []
        var noiseError: String?

        init(label: String?, limits: Limits, headBytes: Int) {
            self.label = label
            frames = LiveFrameDump(direction: label, limits: limits, headBytes: headBytes)
        }
        var available: Int { buffer.count - head }
        func byte(_ i: Int) -> UInt8 { buffer[head + i] }
        func u16(_ i: Int) -> Int { Int(byte(i)) << 8 | Int(byte(i + 1)) }
        func consume(_ n: Int) {
            head += n
            if head == buffer.count {
                base += head; buffer.removeAll(keepingCapacity: true); head = 0
            } else if head >= 1 << 16 && head * 2 >= buffer.count {
                base += head; buffer.removeFirst(head); head = 0
            }
        }
        var isNoise: Bool { if case .noise = mode { true } else { false } }
        var isUndecided: Bool { if case .undecided = mode { true } else { false } }
        var role: Role? { if case .noise(let r) = mode { r } else { nil } }
    }

    private let directions: [Direction]
    private let keyLog: (@Sendable () -> NoiseKeyLog)?
    private let pendingLimit: Int
    private var keys: Keys
    private var pendingBytes = 0

    /// - Parameters:
    ///   - first, second: the directions' labels (as frames and items show them).
    ///   - keyLog: nil when no key log was given (records show as "encrypted, no key log");
    ///     else called when a session needs its keys, and again, while they are missing, as
    ///     more bytes arrive (a node appends its line at handshake time).
    ///   - pendingLimit: how many record bytes (both directions) may wait for a session's
    ///     keys; past it the session's records show as "not in the key log".
    public init(first: String?, second: String?, keyLog: (@Sendable () -> NoiseKeyLog)?,
                limits: Limits = .default, headBytes: Int = 64, pendingLimit: Int = 64 << 20) {
        directions = [Direction(label: first, limits: limits, headBytes: headBytes),
                      Direction(label: second, limits: limits, headBytes: headBytes)]
        self.keyLog = keyLog
        self.pendingLimit = pendingLimit
        keys = keyLog == nil ? .noKeyLog : .unresolved
    }

    /// Feeds the next bytes of one direction.
    public func feed(_ bytes: [UInt8], from side: Side) -> [Output] {
        let d = directions[side.rawValue]
        var out: [Output] = []
        switch d.mode {
        case .plaintext:
            out += d.frames.feed(bytes).map { Output(side: side, item: .frame($0)) }
        case .undecided, .noise:
            guard d.noiseError == nil else { break }
            d.buffer += bytes
            process(side, final: false, &out)
        }
        return out
    }

    /// Declares the end of both directions: decides what is still undecided, reports a
    /// message or frame cut short, and shows records whose keys never appeared.
    public func finish() -> [Output] {
        var out: [Output] = []
        for side in Side.allCases where directions[side.rawValue].isUndecided {
            process(side, final: true, &out)
        }
        for side in Side.allCases {
            let d = directions[side.rawValue]
            if d.isNoise, d.noiseError == nil, d.available > 0 {
                let what = d.handshakes < Self.handshakeLengths[d.role!]!.count
                    ? "handshake message \(messageNumber(d.role!, d.handshakes))" : "record \(d.nextRecord)"
                let want = d.available >= 2 ? "\(2 + d.u16(0))" : "at least 2"
                d.noiseError = "the stream ends inside \(what) at byte offset \(d.base + d.head) (\(d.available) of \(want) bytes): the capture was cut short or the connection broke"
            }
        }
        if case .unresolved = keys { resolve(final: true, &out) }
        for d in directions where d.noiseError == nil { d.frames.finish() }
        return out
    }

    /// True while records wait for the session's key log line.
    public var isWaitingForKeys: Bool {
        if case .unresolved = keys { directions.contains { !$0.pending.isEmpty } } else { false }
    }

    /// Looks for the session's keys again (the key log may have grown) without new bytes;
    /// returns the frames of the records that waited once the keys are found. For a live
    /// connection that falls quiet right after its handshake (the proxy calls it on a timer).
    public func retryKeys() -> [Output] {
        var out: [Output] = []
        if isWaitingForKeys { resolve(final: false, &out) }
        return out
    }

    /// The first malformed frame of a direction (decoding of its frames stopped there).
    public func frameError(_ side: Side) -> WireError? { directions[side.rawValue].frames.error }

    /// Why a Noise direction stopped (a record that failed authentication, a malformed
    /// record or handshake message, a stream cut short), if it did.
    public func noiseError(_ side: Side) -> String? { directions[side.rawValue].noiseError }

    /// The Noise role of a direction, or nil for plaintext (or nothing seen yet).
    public func role(_ side: Side) -> Role? { directions[side.rawValue].role }

    /// The session's keys once found in the key log.
    public var sessionKeys: NoiseSessionKeys? { if case .resolved(let k) = keys { k } else { nil } }

    // MARK: - Decoding

    private func other(_ side: Side) -> Side { side == .first ? .second : .first }

    private func messageNumber(_ role: Role, _ index: Int) -> Int { role == .initiator ? [1, 3][index] : 2 }

    /// Reads what `side` has buffered.
    private func process(_ side: Side, final: Bool, _ out: inout [Output]) {
        let d = directions[side.rawValue]
        if case .undecided = d.mode {
            guard let mode = detect(side, final: final) else { return }
            d.mode = mode
            if case .plaintext = mode {
                let bytes = Array(d.buffer[d.head...])
                d.buffer = []; d.head = 0
                out += d.frames.feed(bytes).map { Output(side: side, item: .frame($0)) }
            }
            // The other direction may have waited for this one's decision.
            let o = directions[other(side).rawValue]
            if o.isUndecided, o.available > 0 { process(other(side), final: final, &out) }
            if case .plaintext = mode { return }
        }
        guard let role = d.role, d.noiseError == nil else { return }
        let lengths = Self.handshakeLengths[role]!
        while d.available >= 2, d.noiseError == nil {
            let length = d.u16(0)
            let offset = d.base + d.head
            if d.handshakes < lengths.count {
                let number = messageNumber(role, d.handshakes)
                guard length == lengths[d.handshakes] else {
                    d.noiseError = "handshake message \(number) at byte offset \(offset) is \(length) bytes, expected \(lengths[d.handshakes]): not a gossip Noise session (Noise_XXpsk3_25519_AESGCM_SHA256, empty payloads), or the handshake failed"
                    break
                }
                guard d.available >= 2 + length else { break }
                let e = number == 3 ? [] : Array(d.buffer[(d.head + 2)..<(d.head + 34)])
                if number == 1 { d.ephemeral = e }
                out.append(Output(side: side, item: .noise(NoiseItem(offset: offset, direction: d.label, length: length,
                                                                     kind: .handshake(message: number, ephemeral: e)))))
                d.handshakes += 1
                d.consume(2 + length)
            } else {
                guard length >= Self.minRecordLength else {
                    d.noiseError = "record \(d.nextRecord) at byte offset \(offset) claims \(length) bytes, less than the \(Self.minRecordLength) of an AES-GCM tag plus one byte: not a valid record; decoding of this direction stopped"
                    break
                }
                guard d.available >= 2 + length else { break }
                let record = (offset: offset, number: d.nextRecord, body: Array(d.buffer[(d.head + 2)..<(d.head + 2 + length)]))
                d.nextRecord += 1
                d.consume(2 + length)
                switch keys {
                case .noKeyLog: show(side, record, .noKeyLog, &out)
                case .notFound: show(side, record, .notInKeyLog, &out)
                case .resolved: open(side, record, &out)
                case .unresolved:
                    d.pending.append(record)
                    pendingBytes += length
                }
            }
        }
        if d.noiseError != nil { d.buffer = []; d.head = 0; d.pending = [] }
        if case .unresolved = keys, directions.contains(where: { !$0.pending.isEmpty }) {
            resolve(final: false, &out)
            if case .unresolved = keys, pendingBytes > pendingLimit {
                keys = .notFound
                flushPending(&out)
            }
        }
    }

    /// Decides whether a direction is plaintext or which Noise role it plays; nil: wait for
    /// more bytes. A plaintext frame starts with a little-endian length of at least 24, so
    /// `00 30` / `00 60` starts are unusual for it; the next message's prefix (or the other
    /// direction) confirms.
    private func detect(_ side: Side, final: Bool) -> Mode? {
        let d = directions[side.rawValue], o = directions[other(side).rawValue]
        let n = d.available
        if n < 2 { return final && n > 0 ? .plaintext : nil }
        func otherStarts(_ second: UInt8) -> Bool { o.available >= 2 && o.byte(0) == 0 && o.byte(1) == second }
        switch (d.byte(0), d.byte(1)) {
        case (0, 0x30):
            if o.role == .responder || (o.role == nil && otherStarts(0x60)) { return .noise(.initiator) }
            if n >= 52 { return d.byte(50) == 0 && d.byte(51) == 0x40 ? .noise(.initiator) : .plaintext }
            return final ? .noise(.initiator) : nil
        case (0, 0x60):
            if o.role == .initiator || (o.role == nil && otherStarts(0x30)) { return .noise(.responder) }
            if case .plaintext = o.mode { return .plaintext }
            if n >= 100 { return d.u16(98) >= Self.minRecordLength ? .noise(.responder) : .plaintext }
            return final ? .noise(.responder) : nil
        default:
            return .plaintext
        }
    }

    /// Shows a record as a record (no frames).
    private func show(_ side: Side, _ r: (offset: Int, number: UInt64, body: [UInt8]), _ status: NoiseItem.RecordStatus, _ out: inout [Output]) {
        out.append(Output(side: side, item: .noise(NoiseItem(offset: r.offset, direction: directions[side.rawValue].label,
                                                             length: r.body.count, kind: .record(number: r.number, status: status)))))
    }

    /// Opens a record with the session's keys and decodes the frames its plaintext completes.
    private func open(_ side: Side, _ r: (offset: Int, number: UInt64, body: [UInt8]), _ out: inout [Output]) {
        let d = directions[side.rawValue]
        guard d.noiseError == nil, case .resolved(let k) = keys, let role = d.role else { return }
        if d.cipher == nil {
            var c = CipherState(cipher: .aesGCM)
            try! c.initializeKey(SymmetricKey(data: role == .initiator ? k.initiatorToResponder : k.responderToInitiator))
            d.cipher = c
        }
        do throws(NoiseError) {
            d.cipher!.setNonce(r.number)
            let plaintext = try d.cipher!.decryptWithAd([], r.body)
            if (r.number + 1) % Self.rekeyInterval == 0 { try d.cipher!.rekey() }
            out += d.frames.feed(plaintext).map { Output(side: side, item: .frame($0)) }
        } catch {
            show(side, r, .failedAuthentication, &out)
            let e = NoiseKeyLog.hexEncode(k.initiatorEphemeral).prefix(16)
            d.noiseError = "record \(r.number) (\(r.body.count) bytes at byte offset \(r.offset)) failed authentication with the key log's keys of session e=\(e)...: "
                + (r.number == 0
                   ? "the key log line does not hold this session's keys (a wrong or edited key log?), or the record was altered"
                   : "the record was altered (records 0 to \(r.number - 1) of this direction opened with the same keys)")
                + "; decoding of this direction stopped"
            d.buffer = []; d.head = 0; d.pending = []
        }
    }

    /// Looks the session up in the key log; opens what waited once found. A session whose
    /// initiator's stream is missing is found by trying each logged responder->initiator key
    /// on the responder's record 0, at the end (`final`) or once too much waits. With `final`,
    /// what stays unfound is shown.
    private func resolve(final: Bool, _ out: inout [Output]) {
        guard case .unresolved = keys, let keyLog else { return }
        let log = keyLog()
        var found: NoiseSessionKeys?
        if let e = directions.first(where: { $0.role == .initiator })?.ephemeral {
            found = log.keys(initiatorEphemeral: e)
        } else if final || pendingBytes > pendingLimit, let responder = directions.first(where: { $0.role == .responder }),
                  let first = responder.pending.first, first.number == 0 {
            found = log.sessions.first { k in
                var c = CipherState(cipher: .aesGCM)
                try! c.initializeKey(SymmetricKey(data: k.responderToInitiator))
                return (try? c.decryptWithAd([], first.body)) != nil
            }
        }
        if let found {
            keys = .resolved(found)
            for side in Side.allCases {
                let d = directions[side.rawValue]
                let waiting = d.pending
                d.pending = []
                for r in waiting { open(side, r, &out) }
            }
            pendingBytes = 0
        } else if final {
            keys = .notFound
            flushPending(&out)
        }
    }

    /// Shows every waiting record as "not in the key log".
    private func flushPending(_ out: inout [Output]) {
        for side in Side.allCases {
            let d = directions[side.rawValue]
            for r in d.pending { show(side, r, .notInKeyLog, &out) }
            d.pending = []
        }
        pendingBytes = 0
    }
}

extension FrameDump {
    /// One line for a Noise item: `@OFFSET [DIRECTION] noise handshake msg=N len=L [e=HEX]`
    /// or `@OFFSET [DIRECTION] noise record=N len=L STATUS` (L: bytes after the 2-byte prefix).
    public static func line(_ n: NoiseItem) -> String {
        var s = "@\(n.offset)"
        if let d = n.direction { s += " \(d)" }
        switch n.kind {
        case .handshake(let message, let e):
            s += " noise handshake msg=\(message) len=\(n.length)"
            if !e.isEmpty { s += " e=\(NoiseKeyLog.hexEncode(e))" }
        case .record(let number, let status):
            s += " noise record=\(number) len=\(n.length) \(status.text)"
        }
        return s
    }

    /// One JSON object for a Noise item (no newline): `noise` is "handshake" (with `message`
    /// and, for messages 1 and 2, `ephemeral`) or "record" (with `record` and `status`).
    public static func json(_ n: NoiseItem) -> String {
        var o: [(String, String)] = [("offset", "\(n.offset)")]
        if let d = n.direction { o.append(("direction", quote(d))) }
        switch n.kind {
        case .handshake(let message, let e):
            o += [("noise", quote("handshake")), ("message", "\(message)"), ("length", "\(n.length)")]
            if !e.isEmpty { o.append(("ephemeral", quote(NoiseKeyLog.hexEncode(e)))) }
        case .record(let number, let status):
            o += [("noise", quote("record")), ("record", "\(number)"), ("length", "\(n.length)"), ("status", quote(status.rawValue))]
        }
        return "{" + o.map { quote($0.0) + ":" + $0.1 }.joined(separator: ",") + "}"
    }

    /// An item as framedump prints it (frames as `render(_:verbose:hex:json:)`; a Noise item
    /// as one line or JSON object). Always ends with a newline.
    public static func render(_ item: DumpItem, verbose: Bool, hex: Bool, json: Bool) -> String {
        switch item {
        case .frame(let r): render(r, verbose: verbose, hex: hex, json: json)
        case .noise(let n): (json ? self.json(n) : line(n)) + "\n"
        }
    }

    /// True when `item` passes the `--type` and `--request-id` filters: frames as
    /// `matches(_:type:requestID:)`; Noise items only when no filter is set.
    public static func matches(_ item: DumpItem, type: MessageType?, requestID: UInt32?) -> Bool {
        switch item {
        case .frame(let r): matches(r, type: type, requestID: requestID)
        case .noise: type == nil && requestID == nil
        }
    }
}
