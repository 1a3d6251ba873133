// Every bound the wire layer enforces, in one value. Each is checked before memory is
// allocated for what it bounds. Defaults are documented in Protocol/SPEC.md, "Limits".

/// The bounds a decoder (and an encoder) enforces.
public struct Limits: Sendable, Equatable {
    /// Largest frame, header included, in bytes.
    public var maxFrameBytes: Int = 16 << 20
    /// Largest uncompressed message (all chunks together), in bytes.
    public var maxMessageBytes: Int = 1 << 30
    /// Most tensors in one tensor payload.
    public var maxTensors: Int = 4096
    /// Longest name (tensor name, endpoint, string field), in UTF-8 bytes.
    public var maxNameBytes: Int = 256
    /// Most dimensions of one tensor.
    public var maxDimensions: Int = 8
    /// Most peers in one peer list.
    public var maxPeers: Int = 1024
    /// Longest error or status text, in UTF-8 bytes.
    public var maxTextBytes: Int = 64 << 10
    /// Uncompressed bytes a sender puts in one chunk (frame) of a message.
    public var chunkBytes: Int = 4 << 20

    public init() {}

    public static let `default` = Limits()
}
