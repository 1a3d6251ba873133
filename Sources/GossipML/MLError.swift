// MLError: the one error type of GossipML. Every message says what was wrong and what to do.

/// An error from GossipML: a machine-readable kind plus a message for humans.
///
/// The message names the offending input (file, tensor, argument) and suggests a fix.
public struct MLError: Error, CustomStringConvertible, Sendable, Equatable {
    /// What class of problem occurred.
    public enum Kind: String, Sendable, Equatable {
        /// A model architecture string or layer list is invalid.
        case invalidArchitecture
        /// Two parameter sets (or a parameter set and a model) have different schemas.
        case schemaMismatch
        /// A dataset file is malformed (wrong magic, truncated, count mismatch, bad CSV).
        case invalidDataset
        /// A file could not be opened, read, or written.
        case io
        /// A safetensors file or buffer is malformed or unsupported.
        case invalidSafeTensors
        /// An argument (shard index, batch size, source string, ...) is out of range.
        case invalidArgument
    }

    /// The class of problem.
    public let kind: Kind
    /// What was wrong and what to do about it.
    public let message: String

    /// Creates an error of `kind` with a human-readable `message`.
    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    public var description: String { "\(kind.rawValue): \(message)" }
}
