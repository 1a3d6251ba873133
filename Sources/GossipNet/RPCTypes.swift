// Value types of the RPC layer: endpoints (parse/print), RPC errors with status codes, call
// options, server statistics, and the error-reply payload layout (RPCErrorPayload).
import GossipWire

/// A TCP endpoint: host (name or numeric address) and port.
public struct Endpoint: Hashable, Sendable, CustomStringConvertible {
    public let host: String
    public let port: UInt16

    public init(host: String, port: UInt16) {
        self.host = host
        self.port = port
    }

    /// Parses "127.0.0.1:9000", "[::1]:9000" or "localhost:9000".
    /// - Throws: `RPCError(.invalidArgument)` naming what is wrong with the text.
    public init(parsing text: String) throws(RPCError) {
        let s = text.trimmingWhitespace()
        let hostPart: Substring
        let portPart: Substring
        if s.hasPrefix("[") {
            guard let close = s.firstIndex(of: "]") else {
                throw RPCError(.invalidArgument, "endpoint '\(text)' opens '[' but has no ']'; write IPv6 as [::1]:9000")
            }
            hostPart = s[s.index(after: s.startIndex)..<close]
            let rest = s[s.index(after: close)...]
            guard rest.hasPrefix(":") else {
                throw RPCError(.invalidArgument, "endpoint '\(text)' needs ':PORT' after ']'; write IPv6 as [::1]:9000")
            }
            portPart = rest.dropFirst()
        } else {
            guard let colon = s.lastIndex(of: ":") else {
                throw RPCError(.invalidArgument, "endpoint '\(text)' has no port; write HOST:PORT, e.g. 127.0.0.1:9000")
            }
            hostPart = s[..<colon]
            portPart = s[s.index(after: colon)...]
            if hostPart.contains(":") {
                throw RPCError(.invalidArgument, "endpoint '\(text)' looks like an IPv6 address without brackets; write [\(hostPart)]:\(portPart)")
            }
        }
        guard !hostPart.isEmpty else {
            throw RPCError(.invalidArgument, "endpoint '\(text)' has an empty host; write HOST:PORT, e.g. 127.0.0.1:9000")
        }
        guard hostPart.utf8.count <= 253, hostPart.unicodeScalars.allSatisfy({ $0.isASCII && (
            ("a"..."z").contains($0) || ("A"..."Z").contains($0) || ("0"..."9").contains($0) || ".-_:%".unicodeScalars.contains($0))
        }) else {
            throw RPCError(.invalidArgument, "endpoint '\(text)' has a host that is not a name or an address (letters, digits, '.', '-', '_'; IPv6 in brackets)")
        }
        guard let port = UInt16(portPart) else {
            throw RPCError(.invalidArgument, "endpoint '\(text)' has port '\(portPart)', which is not a number in 0...65535")
        }
        self.init(host: String(hostPart), port: port)
    }

    /// "host:port", with IPv6 hosts in brackets; round-trips through `init(parsing:)`.
    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}

extension String {
    func trimmingWhitespace() -> Substring {
        var s = self[...]
        while let f = s.first, f.isWhitespace { s = s.dropFirst() }
        while let l = s.last, l.isWhitespace { s = s.dropLast() }
        return s
    }
}

/// The terminal failure of an RPC: a status code and a message saying what went wrong.
public struct RPCError: Error, Sendable, CustomStringConvertible, Equatable {
    public let code: StatusCode
    public let message: String
    /// True when the other side sent this status in an error reply; false when it arose
    /// here (could not connect, connection lost, local deadline).
    public let remote: Bool
    /// True when the request provably never left this node: the call failed before any of its
    /// bytes were handed to a connection (the connect failed, or the call was still waiting
    /// for one) or while the connection's secure handshake was unfinished (no application
    /// data moves before it completes, SPEC §13). False when it may have been delivered.
    public let notSent: Bool

    public init(_ code: StatusCode, _ message: String, remote: Bool = false, notSent: Bool = false) {
        self.code = code
        self.message = message
        self.remote = remote
        self.notSent = notSent
    }

    /// The same error, marked as never sent.
    func markedNotSent() -> RPCError { RPCError(code, message, remote: remote, notSent: true) }

    public var description: String { "\(code.name): \(message)" }
}

/// Per-message options: compression and checksums.
public struct RPCOptions: Sendable {
    /// Compression of the payload (`.none` for bulk float data on fast links).
    public var compression: CompressionMode = .none
    /// CRC-32 each frame's payload.
    public var checksum: Bool = true

    public init(compression: CompressionMode = .none, checksum: Bool = true) {
        self.compression = compression
        self.checksum = checksum
    }
}

/// Server counters, read without stopping the server.
public struct ServerStats: Sendable, Equatable {
    /// Connections open now.
    public var connections: Int
    /// Connections accepted since start.
    public var acceptedConnections: Int
    /// Requests received (handled or refused).
    public var requests: Int
    /// Requests whose handler has not answered yet.
    public var inFlight: Int
    /// Bytes received and sent on all connections.
    public var bytesIn: Int
    public var bytesOut: Int
    /// Connections refused since start (server full with nothing evictable, over the
    /// per-address cap, or shutting down).
    public var refusedConnections = 0
    /// Idle connections closed to make room for a newcomer (SPEC §11, fair admission).
    public var evictedConnections = 0
}

/// Encodes and decodes the error-reply payload (Protocol/SPEC.md §8): `u32 code`, then
/// `text` (u32 LE byte length + UTF-8), through GossipWire's `ErrorReply`.
enum RPCErrorPayload {
    /// Message type of connection-level error replies (request id 0): a malformed frame, or
    /// a connection over the server's limit (SPEC §4, §8). Never a request type.
    static let connectionErrorType = MessageType.connection

    /// Encodes an error reply payload exactly as SPEC.md §8 and `ErrorReply` define it
    /// (u32 status code, then `text`), cutting the message at a UTF-8 boundary to fit.
    static func encode(_ code: StatusCode, _ message: String, limits: Limits = .default) -> ByteSlice {
        var text = Array(message.utf8)
        if text.count > limits.maxTextBytes {
            var cut = limits.maxTextBytes
            while cut > 0 && (text[cut] & 0xC0) == 0x80 { cut -= 1 }
            text.removeSubrange(cut...)
        }
        let fitted = String(decoding: text, as: UTF8.self)
        // Cannot fail: the text fits the limit.
        return try! ErrorReply(code: code, message: fitted).encode(limits: limits)
    }

    /// Decodes an error reply payload into the error the caller sees.
    static func decode(_ payload: ByteSlice, limits: Limits = .default) throws(WireError) -> RPCError {
        let reply = try ErrorReply.decode(payload, limits: limits)
        return RPCError(reply.code, reply.message)
    }
}
