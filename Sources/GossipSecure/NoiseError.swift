// Errors of the Noise state machines and the key files. Each says what was wrong and what to
// do; none ever carries secret bytes.

/// An error from the Noise handshake, a transport cipher, or a key file.
///
/// Mapping onto wire status codes (for the transport that owns the socket): every handshake
/// and decryption failure is UNAUTHENTICATED (16) and closes the connection; key-file errors
/// are local configuration errors and never reach the wire.
public struct NoiseError: Error, Sendable, Equatable, CustomStringConvertible {
    /// What class of problem this is; stable, suitable for tests and for logs.
    public enum Kind: String, Sendable, Equatable {
        /// The protocol name is not one this module implements.
        case unsupportedProtocol
        /// A key, PSK or prologue given to `HandshakeState.init` is missing or malformed.
        case invalidConfiguration
        /// `writeMessage`/`readMessage` called out of turn, after completion or after a failure.
        case outOfOrder
        /// A handshake message is shorter than its pattern requires (truncated or hostile).
        case truncated
        /// A message is longer than the Noise limit of 65535 bytes.
        case messageTooLarge
        /// AEAD authentication failed: wrong key or PSK, or the bytes were altered.
        case decryptFailed
        /// A Diffie-Hellman result was rejected (low-order or invalid public key).
        case invalidPublicKey
        /// The nonce reached 2^64-1; the cipher state must not be used any more.
        case nonceExhausted
        /// A key file could not be read, written, or parsed, or its permissions are too open.
        case keyFile
    }

    public var kind: Kind
    public var message: String

    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    public var description: String { "\(message) (\(kind.rawValue))" }
}
