// The JSON-lines metrics log (`gossipd peer --metrics-file FILE`): a `TelemetrySink` that
// appends one JSON object per `NodeEvent`, and the reader that parses such files back (for
// `gossipctl plot` and the demo's plot). Every line is written with one `write(2)` on a
// descriptor opened with O_APPEND, so `tail -f` and concurrent readers never see half a line
// (short of a full disk) and several writers to one file interleave whole lines.
//
// Schema (README "Metrics log and plots"): every line has `ts` (RFC 3339 UTC with
// milliseconds), `node` (the peer's advertised HOST:PORT), `event` ("round", "eval",
// "exchange", "membership"), then the event's fields in snake_case. Non-finite numbers are
// written as null. Readers skip unknown `event` kinds (later versions may add some).
import Foundation
import GossipWire
import Synchronization

/// Appends `NodeEvent`s to a file, one JSON object per line.
///
/// Thread-safe: lines are serialised by a lock and each goes out in one `write(2)`.
/// Invariant: the descriptor is owned by this object and closed in `deinit`.
public final class MetricsLog: TelemetrySink, Sendable {
    public let path: String
    private let fd: Int32
    private struct State { var node = ""; var failures = 0; var lines = 0 }
    private let state = Mutex(State())
    private let onError: @Sendable (String) -> Void

    /// Opens (creating with mode 0644 when absent) `path` for appending.
    /// - Parameters:
    ///   - node: the `node` field of every line; `setNode` changes it (a peer learns its
    ///     advertised endpoint only once it serves).
    ///   - onError: told once about the first failed write (for example a full disk); later
    ///     writes are still tried, so the log resumes when space returns.
    /// - Throws: `MetricsLogError` naming the path and the reason when it cannot be opened.
    public init(path: String, node: String = "", onError: @escaping @Sendable (String) -> Void = { _ in }) throws(MetricsLogError) {
        self.path = path
        self.onError = onError
        let fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            let e = errno
            throw MetricsLogError("cannot open the metrics file '\(path)' for appending: \(String(cString: strerror(e))); "
                                  + "check that its directory exists and is writable, or give another --metrics-file")
        }
        var st = stat()
        if fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFDIR {
            close(fd)
            throw MetricsLogError("the metrics file '\(path)' is a directory; give a file path to --metrics-file")
        }
        self.fd = fd
        state.withLock { $0.node = node }
    }

    deinit { close(fd) }

    /// Sets the `node` field of the lines written from now on.
    public func setNode(_ node: String) {
        state.withLock { $0.node = node }
    }

    /// Lines written so far (for tests and diagnostics).
    public var linesWritten: Int { state.withLock { $0.lines } }

    public func record(_ event: NodeEvent) {
        record(event, at: Date())
    }

    /// Appends the line of `event` stamped with `date`.
    public func record(_ event: NodeEvent, at date: Date) {
        state.withLock { s in
            let line = MetricsLog.line(for: event, node: s.node, at: date)
            if writeAll(Array(line.utf8)) {
                s.lines += 1
            } else {
                let e = errno
                s.failures += 1
                if s.failures == 1 {
                    onError("cannot append to the metrics file '\(path)': \(String(cString: strerror(e))); lines are lost until writes succeed again")
                }
            }
        }
    }

    /// One `write(2)` for the whole line in the normal case; retries EINTR and continues a
    /// short write (a pipe or FIFO as the file).
    private func writeAll(_ bytes: [UInt8]) -> Bool {
        bytes.withUnsafeBytes { buf -> Bool in
            var off = 0
            while off < buf.count {
                let n = write(fd, buf.baseAddress! + off, buf.count - off)
                if n < 0 {
                    if errno == EINTR { continue }
                    return false
                }
                off += n
            }
            return true
        }
    }

    /// The JSON line (with its trailing newline) of `event`.
    public static func line(for event: NodeEvent, node: String, at date: Date) -> String {
        var o = JSONLine()
        o.string("ts", rfc3339(date))
        o.string("node", node)
        switch event {
        case .round(let round, let loss, let steps, let samples):
            o.string("event", "round")
            o.int("round", round)
            o.number("loss", loss)
            o.int("steps", steps)
            o.int("samples", samples)
        case .eval(let round, let accuracy, let loss):
            o.string("event", "eval")
            o.int("round", round)
            o.number("accuracy", accuracy)
            o.number("loss", loss)
        case .exchange(let round, let peer, let outcome, let status, let distance, let seconds):
            o.string("event", "exchange")
            o.int("round", round)
            o.string("peer", peer)
            o.string("outcome", outcome)
            o.optionalString("status", status)
            o.number("distance", distance)
            o.number("seconds", seconds)
        case .membership(let round, let known, let added, let removed):
            o.string("event", "membership")
            o.int("round", round)
            o.int("known", known)
            o.strings("added", added)
            o.strings("removed", removed)
        }
        return o.finish() + "\n"
    }

    /// `date` as RFC 3339 in UTC with milliseconds: `2026-12-03T09:48:35.123Z`.
    public static func rfc3339(_ date: Date) -> String {
        let t = date.timeIntervalSince1970
        var secs = Int(t.rounded(.down))
        var ms = Int(((t - Double(secs)) * 1000).rounded())
        if ms >= 1000 { secs += 1; ms -= 1000 }
        var tt = time_t(secs)
        var parts = tm()
        gmtime_r(&tt, &parts)
        return String(format: "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", Int(parts.tm_year) + 1900, Int(parts.tm_mon) + 1, Int(parts.tm_mday),
                      Int(parts.tm_hour), Int(parts.tm_min), Int(parts.tm_sec), ms)
    }

    /// Seconds since 1970 of an RFC 3339 timestamp (`Z` or `+HH:MM`/`-HH:MM`, fraction
    /// optional); nil when `s` is not one.
    public static func parseRFC3339(_ s: String) -> Double? {
        let b = Array(s.utf8)
        func digits(_ at: Int, _ n: Int) -> Int? {
            guard at + n <= b.count else { return nil }
            var v = 0
            for i in at..<(at + n) {
                guard b[i] >= 48, b[i] <= 57 else { return nil }
                v = v * 10 + Int(b[i] - 48)
            }
            return v
        }
        guard b.count >= 20, let year = digits(0, 4), b[4] == UInt8(ascii: "-"), let month = digits(5, 2), b[7] == UInt8(ascii: "-"),
              let day = digits(8, 2), b[10] == UInt8(ascii: "T") || b[10] == UInt8(ascii: "t") || b[10] == UInt8(ascii: " "),
              let hour = digits(11, 2), b[13] == UInt8(ascii: ":"), let minute = digits(14, 2), b[16] == UInt8(ascii: ":"),
              let second = digits(17, 2),
              (1...12).contains(month), (1...31).contains(day), hour < 24, minute < 60, second <= 60 else { return nil }
        var i = 19
        var fraction = 0.0
        if i < b.count, b[i] == UInt8(ascii: ".") {
            i += 1
            var scale = 0.1
            let start = i
            while i < b.count, b[i] >= 48, b[i] <= 57 {
                fraction += Double(b[i] - 48) * scale
                scale /= 10
                i += 1
            }
            guard i > start else { return nil }
        }
        guard i < b.count else { return nil }
        var offset = 0
        if b[i] == UInt8(ascii: "Z") || b[i] == UInt8(ascii: "z") {
            i += 1
        } else if b[i] == UInt8(ascii: "+") || b[i] == UInt8(ascii: "-") {
            guard let oh = digits(i + 1, 2), i + 3 < b.count, b[i + 3] == UInt8(ascii: ":"), let om = digits(i + 4, 2) else { return nil }
            offset = (oh * 3600 + om * 60) * (b[i] == UInt8(ascii: "+") ? 1 : -1)
            i += 6
        } else {
            return nil
        }
        guard i == b.count else { return nil }
        var parts = tm()
        parts.tm_year = Int32(year - 1900)
        parts.tm_mon = Int32(month - 1)
        parts.tm_mday = Int32(day)
        parts.tm_hour = Int32(hour)
        parts.tm_min = Int32(minute)
        parts.tm_sec = Int32(second)
        let t = timegm(&parts)
        return Double(t) - Double(offset) + fraction
    }
}

/// A metrics file that cannot be opened, read or parsed; the message names the file (and
/// the line) and says what to do.
public struct MetricsLogError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// Builds one JSON object in a fixed key order (`ts`, `node`, `event` first, for people
/// reading the file).
struct JSONLine {
    private var s = "{"
    private var first = true

    private mutating func key(_ k: String) {
        if !first { s += "," }
        first = false
        s += JSONLine.quote(k) + ":"
    }
    mutating func string(_ k: String, _ v: String) { key(k); s += JSONLine.quote(v) }
    mutating func optionalString(_ k: String, _ v: String?) { key(k); s += v.map(JSONLine.quote) ?? "null" }
    mutating func int(_ k: String, _ v: Int) { key(k); s += String(v) }
    /// A finite number in Swift's shortest round-trip form; null when nil or not finite.
    mutating func number(_ k: String, _ v: Double?) {
        key(k)
        if let v, v.isFinite { s += "\(v)" } else { s += "null" }
    }
    mutating func strings(_ k: String, _ v: [String]) { key(k); s += "[" + v.map(JSONLine.quote).joined(separator: ",") + "]" }
    func finish() -> String { s + "}" }

    static func quote(_ v: String) -> String { JSONString.quote(v) }
}

/// `read(2)` under a name the reader's own `read(path:)` does not shadow.
private func posixRead(_ fd: Int32, _ buf: UnsafeMutableRawPointer, _ count: Int) -> Int {
    read(fd, buf, count)
}

/// One parsed line of a metrics log.
public struct MetricsRecord: Sendable {
    /// Seconds since 1970 (from `ts`).
    public var time: Double
    public var node: String
    public var event: NodeEvent
    public init(time: Double, node: String, event: NodeEvent) {
        self.time = time
        self.node = node
        self.event = event
    }
}

/// What a metrics file held.
public struct MetricsFile: Sendable {
    public var path: String
    public var records: [MetricsRecord]
    /// Lines with an `event` this version does not know (skipped).
    public var unknownEvents = 0
    /// The last line had no newline and did not parse (a writer still writing, or a crash):
    /// it was skipped.
    public var truncatedLastLine = false
}

/// Parses metrics logs written by `MetricsLog`.
public enum MetricsLogReader {
    /// The longest line accepted (a membership line lists peers; a peer list is bounded far below this).
    public static let maxLineBytes = 1 << 20

    /// Parses one line. Returns nil for an `event` kind this version does not know.
    /// - Throws: a message saying what is wrong with the line (without file or line number).
    public static func parse(line: some StringProtocol) throws(MetricsLogError) -> MetricsRecord? {
        guard let data = String(line).data(using: .utf8),
              let any = try? JSONSerialization.jsonObject(with: data, options: []) else {
            throw MetricsLogError("not a JSON object")
        }
        guard let o = any as? [String: Any] else { throw MetricsLogError("not a JSON object") }
        func str(_ k: String) throws(MetricsLogError) -> String {
            guard let v = o[k] as? String else { throw MetricsLogError("'\(k)' is missing or not a string") }
            return v
        }
        func optStr(_ k: String) throws(MetricsLogError) -> String? {
            guard let v = o[k], !(v is NSNull) else { return nil }
            guard let s = v as? String else { throw MetricsLogError("'\(k)' is not a string or null") }
            return s
        }
        func num(_ k: String) throws(MetricsLogError) -> Double? {
            guard let v = o[k], !(v is NSNull) else { return nil }
            guard let n = v as? NSNumber else { throw MetricsLogError("'\(k)' is not a number or null") }
            return n.doubleValue
        }
        func int(_ k: String) throws(MetricsLogError) -> Int {
            guard let d = try num(k), d.isFinite, d.rounded() == d, abs(d) < 9.0e15 else { throw MetricsLogError("'\(k)' is missing or not an integer") }
            return Int(d)
        }
        func list(_ k: String) throws(MetricsLogError) -> [String] {
            guard let v = o[k] as? [Any] else { throw MetricsLogError("'\(k)' is missing or not a list") }
            var out: [String] = []
            for e in v {
                guard let s = e as? String else { throw MetricsLogError("'\(k)' holds a non-string") }
                out.append(s)
            }
            return out
        }
        let ts = try str("ts")
        guard let time = MetricsLog.parseRFC3339(ts) else { throw MetricsLogError("'ts' \(ts) is not an RFC 3339 timestamp") }
        let node = try str("node")
        let event: NodeEvent
        switch try str("event") {
        case "round":
            event = .round(round: try int("round"), loss: try num("loss") ?? .nan, steps: try int("steps"), samples: try int("samples"))
        case "eval":
            event = .eval(round: try int("round"), accuracy: try num("accuracy") ?? .nan, loss: try num("loss") ?? .nan)
        case "exchange":
            event = .exchange(round: try int("round"), peer: try str("peer"), outcome: try str("outcome"), status: try optStr("status"),
                              distance: try num("distance"), seconds: try num("seconds") ?? .nan)
        case "membership":
            event = .membership(round: try int("round"), known: try int("known"), added: try list("added"), removed: try list("removed"))
        default:
            return nil
        }
        return MetricsRecord(time: time, node: node, event: event)
    }

    /// Reads a whole metrics file, streaming (memory: one chunk plus the parsed records).
    /// A last line without a newline that does not parse is skipped (`truncatedLastLine`);
    /// empty lines are skipped.
    /// - Throws: `MetricsLogError` naming the file (and line) when it cannot be read, a line is
    ///   malformed or longer than `maxLineBytes`.
    public static func read(path: String) throws(MetricsLogError) -> MetricsFile {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            let e = errno
            throw MetricsLogError("cannot read the metrics file '\(path)': \(String(cString: strerror(e)))")
        }
        defer { close(fd) }
        var st = stat()
        if fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFDIR {
            throw MetricsLogError("'\(path)' is a directory, not a metrics file (give the .jsonl files that --metrics-file wrote)")
        }
        var file = MetricsFile(path: path, records: [])
        var pending: [UInt8] = []
        var lineNo = 0
        var chunk = [UInt8](repeating: 0, count: 1 << 16)

        func handle(_ bytes: ArraySlice<UInt8>, last: Bool) throws(MetricsLogError) {
            lineNo += 1
            var slice = bytes
            if slice.last == UInt8(ascii: "\r") { slice = slice.dropLast() }
            if slice.allSatisfy({ $0 == 32 || $0 == 9 }) { return }
            let text = String(decoding: slice, as: UTF8.self)
            do throws(MetricsLogError) {
                if let r = try parse(line: text) { file.records.append(r) } else { file.unknownEvents += 1 }
            } catch {
                if last { file.truncatedLastLine = true; return }
                throw MetricsLogError("\(path):\(lineNo): \(error.message); each line must be one JSON object as gossipd peer --metrics-file writes it")
            }
        }

        while true {
            let n = chunk.withUnsafeMutableBytes { posixRead(fd, $0.baseAddress!, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                let e = errno
                throw MetricsLogError("cannot read the metrics file '\(path)': \(String(cString: strerror(e)))")
            }
            if n == 0 { break }
            var start = 0
            for i in 0..<n where chunk[i] == UInt8(ascii: "\n") {
                if pending.isEmpty {
                    try handle(chunk[start..<i], last: false)
                } else {
                    pending += chunk[start..<i]
                    try handle(pending[...], last: false)
                    pending.removeAll(keepingCapacity: true)
                }
                start = i + 1
            }
            pending += chunk[start..<n]
            if pending.count > maxLineBytes {
                throw MetricsLogError("\(path):\(lineNo + 1): a line longer than \(maxLineBytes) bytes; this is not a metrics log")
            }
        }
        if !pending.isEmpty { try handle(pending[...], last: true) }
        return file
    }
}
