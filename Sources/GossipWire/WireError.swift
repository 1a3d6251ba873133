// Typed decode/encode errors of the wire layer. Every malformed input maps to one of these,
// naming the byte offset and what was wrong; each maps onto a wire status code.

/// An error found while decoding or encoding wire bytes.
///
/// `offset` is the byte offset in the stream (or in the payload, for payload errors) at
/// which the problem was found, when known.
public struct WireError: Error, Sendable, Equatable, CustomStringConvertible {
    /// What class of problem this is; stable, suitable for tests and for status mapping.
    public enum Kind: String, Sendable, Equatable {
        case frameTooShort           // length prefix below the header size
        case frameTooLarge           // length prefix above the frame limit
        case unsupportedVersion
        case unknownFlags
        case invalidFlags            // a combination that is not allowed
        case reservedNonZero
        case checksumMismatch
        case lengthMismatch          // declared sizes disagree with each other or the payload
        case messageTooLarge         // declared uncompressed size above the limit
        case decompressionFailed     // corrupt zlib data
        case decompressionOverflow   // inflates past its declared size (bomb)
        case streamViolation         // chunk of another message before END_STREAM, etc.
        case truncated               // a payload field runs past the end
        case malformed               // a payload field has an invalid value
        case limitExceeded           // tensor count, name length, peer count ...
        case invalidUTF8
        case unknownMessageType
        case schemaMismatch
        case compressionFailed
        case unsupported             // a defined value this version does not implement yet (dtype)
    }

    public var kind: Kind
    public var offset: Int?
    public var message: String

    public init(_ kind: Kind, at offset: Int? = nil, _ message: String) {
        self.kind = kind
        self.offset = offset
        self.message = message
    }

    public var description: String {
        if let offset { return "\(message) (at byte offset \(offset), \(kind.rawValue))" }
        return "\(message) (\(kind.rawValue))"
    }

    /// The status code an error reply carries for this error.
    public var statusCode: StatusCode {
        switch kind {
        case .frameTooLarge, .messageTooLarge, .limitExceeded, .decompressionOverflow: .resourceExhausted
        case .unknownMessageType: .unimplemented
        case .unsupportedVersion, .unsupported: .unimplemented
        case .schemaMismatch: .failedPrecondition
        case .checksumMismatch, .decompressionFailed: .dataLoss
        case .compressionFailed: .internal
        default: .invalidArgument
        }
    }
}
