// The session key log that `gossipd --keylog-file` writes (the idea of SSLKEYLOGFILE; SPEC
// §13, contract A of issue 9): one line per Noise session,
//
//     GOSSIP_NOISE_AESGCM <e_i> <k_i2r> <k_r2i>
//
// each value 64 hex digits: the initiator's ephemeral public key (bytes 2..34 of the
// initiator's stream), the key of the initiator->responder CipherState and the key of the
// responder->initiator CipherState right after Split() (before any Rekey). Parsing is pure;
// `NoiseKeyLogFile` re-reads a file that a running node appends to (framedump proxy).
//
// A key log holds secrets: whoever has it reads the sessions it names. framedump never prints
// a key, only the initiator's ephemeral key (public, it travels in clear in message 1).
import Foundation
import GossipSecure
import Synchronization

/// The secrets of one Noise session, as one key log line gives them.
public struct NoiseSessionKeys: Sendable, Equatable {
    /// The initiator's ephemeral public key (32 bytes): how a session is found in a capture.
    public var initiatorEphemeral: [UInt8]
    /// The initiator->responder cipher key right after Split() (32 bytes).
    public var initiatorToResponder: [UInt8]
    /// The responder->initiator cipher key right after Split() (32 bytes).
    public var responderToInitiator: [UInt8]

    /// - Precondition: each value is 32 bytes.
    public init(initiatorEphemeral: [UInt8], initiatorToResponder: [UInt8], responderToInitiator: [UInt8]) {
        precondition(initiatorEphemeral.count == 32 && initiatorToResponder.count == 32 && responderToInitiator.count == 32,
                     "a Noise key log entry holds three 32-byte values")
        self.initiatorEphemeral = initiatorEphemeral
        self.initiatorToResponder = initiatorToResponder
        self.responderToInitiator = responderToInitiator
    }
}

/// An error reading a key log file.
public struct KeyLogError: Error, Sendable, Equatable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// A parsed key log: the sessions it names, and what was wrong with lines it skipped.
///
/// Unknown lines (another label, another tool's secrets) and comments (`#`) are ignored
/// silently; a `GOSSIP_NOISE_AESGCM` line that does not hold three 64-hex-digit values is
/// skipped with a warning naming its line number (never its content: it may hold secrets).
/// An unterminated last line is skipped silently when it does not parse: a node may be
/// writing it right now.
public struct NoiseKeyLog: Sendable {
    /// The label of a session line (contract A: the cipher is named in the label).
    public static let label = "GOSSIP_NOISE_AESGCM"
    /// The largest key log file read (a line is 214 bytes: about 1.2 million sessions).
    public static let maxFileBytes = 256 << 20

    /// The sessions, in file order.
    public private(set) var sessions: [NoiseSessionKeys] = []
    /// One text per skipped malformed line ("key log line N: ...").
    public private(set) var warnings: [String] = []
    private var byEphemeral: [[UInt8]: Int] = [:]

    /// An empty key log.
    public init() {}

    /// Parses key log text.
    public init(text: String) {
        // "\r\n" is one Character in Swift: split on both, or a CRLF file is one long line.
        let lines = text.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == "\r\n" })
        for (i, line) in lines.enumerated() {
            let unterminated = i == lines.count - 1
            let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\r" })
            guard let first = fields.first, !first.hasPrefix("#"), first == Self.label else { continue }
            let values = fields.dropFirst().map { Hex.decode($0, count: 32) }
            guard values.count == 3, let e = values[0], let k1 = values[1], let k2 = values[2] else {
                if !unterminated {
                    warnings.append("key log line \(i + 1): \(Self.label) needs three values of 64 hex digits (e_i, k_i2r, k_r2i); line ignored")
                }
                continue
            }
            add(NoiseSessionKeys(initiatorEphemeral: e, initiatorToResponder: k1, responderToInitiator: k2))
        }
    }

    /// Reads and parses a key log file.
    /// - Throws: `KeyLogError` when the file cannot be read or is larger than `maxFileBytes`.
    public init(contentsOf path: String) throws(KeyLogError) {
        let attributes = try? FileManager.default.attributesOfItem(atPath: path)
        if let size = attributes?[.size] as? Int, size > Self.maxFileBytes {
            throw KeyLogError("key log \(path) is \(size) bytes, more than the \(Self.maxFileBytes) framedump reads: is it a key log? (lines are `\(Self.label) <e_i> <k_i2r> <k_r2i>`)")
        }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw KeyLogError("cannot read key log \(path): check the path and that you may read it (gossipd writes it with --keylog-file, mode 0600)")
        }
        self.init(text: String(decoding: data, as: UTF8.self))
    }

    /// Adds a session; a later entry for the same ephemeral key replaces an earlier one.
    public mutating func add(_ keys: NoiseSessionKeys) {
        if let at = byEphemeral[keys.initiatorEphemeral] {
            sessions[at] = keys
        } else {
            byEphemeral[keys.initiatorEphemeral] = sessions.count
            sessions.append(keys)
        }
    }

    /// The session whose initiator sent ephemeral key `e`, if the log names it.
    public func keys(initiatorEphemeral e: [UInt8]) -> NoiseSessionKeys? {
        byEphemeral[e].map { sessions[$0] }
    }

    /// The key log line of `keys` (with its newline), as gossipd writes it.
    public static func line(_ keys: NoiseSessionKeys) -> String {
        "\(label) \(hexEncode(keys.initiatorEphemeral)) \(hexEncode(keys.initiatorToResponder)) \(hexEncode(keys.responderToInitiator))\n"
    }

    /// Lowercase hex.
    public static func hexEncode(_ bytes: [UInt8]) -> String { Hex.encode(bytes) }
}

/// A key log file that a running node appends to: `current()` re-reads it when its size or
/// modification time changed since the last read (framedump proxy asks when a session needs
/// its keys, so a line written at handshake time is found). Thread-safe.
public final class NoiseKeyLogFile: Sendable {
    public let path: String
    private struct State {
        var stamp: [Int]? = nil
        var log = NoiseKeyLog()
        var reported = 0
    }
    private let state = Mutex(State())

    public init(path: String) {
        self.path = path
    }

    /// The key log as the file is now (empty while the file does not exist), and the warnings
    /// of lines that were not reported by an earlier call.
    public func current() -> (log: NoiseKeyLog, newWarnings: [String]) {
        state.withLock { s in
            var st = stat()
            guard stat(path, &st) == 0 else { return (s.log, []) }
            let stamp = [Int(st.st_size), Int(st.st_mtim.tv_sec), Int(st.st_mtim.tv_nsec), Int(st.st_ino)]
            if stamp != s.stamp, let log = try? NoiseKeyLog(contentsOf: path) {
                s.stamp = stamp
                s.log = log
            }
            let fresh = Array(s.log.warnings.dropFirst(s.reported))
            s.reported = max(s.reported, s.log.warnings.count)
            return (s.log, fresh)
        }
    }
}
