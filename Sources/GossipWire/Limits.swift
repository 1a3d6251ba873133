// Every bound the wire layer enforces, in one value. Each is checked before memory is
// allocated for what it bounds. Defaults are documented in Protocol/SPEC.md, "Limits".

/// The bounds a decoder (and an encoder) enforces.
public struct Limits: Sendable, Equatable {
    /// Largest frame, header included, in bytes.
    public var maxFrameBytes: Int = 16 << 20
    /// Largest uncompressed model-carrying message (GetModel reply, GossipExchange request
    /// and reply; all chunks together), in bytes, and the bound of every other message too.
    /// A node sets it from its model with `fitModel(payloadBytes:)`.
    public var maxMessageBytes: Int = 1 << 30
    /// Largest uncompressed control message: every message that does not carry a model,
    /// error replies included. The default holds the largest control message the other
    /// limits allow: a Register reply with `maxPeers` entries of an endpoint of `maxNameBytes`
    /// and a 32-byte identity (4 + 1024 x 290 bytes, about 290 KiB) and a status text of
    /// `maxTextBytes` (64 KiB).
    public var maxControlMessageBytes: Int = 512 << 10
    /// Largest Ping request or reply: a liveness probe needs no payload to speak of, and a
    /// receiver that echoes it must not be made to hold (or send back) a model's worth.
    public var maxPingBytes: Int = 64 << 10
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

    /// Bytes a model-carrying message may hold beyond the encoded model itself: the peer list,
    /// counters and names that travel with it (bounded like a control message).
    public var modelMessageMargin: Int { maxControlMessageBytes }

    /// These limits with `maxMessageBytes` set for a node whose encoded model (its GetModel
    /// reply payload, `ModelState`) is `payloadBytes` long: the model plus
    /// `modelMessageMargin`, never above the current `maxMessageBytes`.
    public func fittingModel(payloadBytes: Int) -> Limits {
        var l = self
        l.maxMessageBytes = Swift.min(maxMessageBytes, Swift.max(0, payloadBytes) + modelMessageMargin)
        return l
    }

    /// Whether messages of `type` sent as `kind` carry a model (GetModel reply, GossipExchange
    /// request and reply, PushSum request): those are bounded by `maxMessageBytes`, all others less.
    public static func carriesModel(_ type: MessageType, _ kind: MessageKind) -> Bool {
        switch (type, kind) {
        case (.getModel, .response), (.gossipExchange, .request), (.gossipExchange, .response), (.pushSum, .request),
             (.modelPull, .response), (.modelPush, .request): true
        default: false
        }
    }

    /// The largest uncompressed message of `type` sent as `kind`: `maxMessageBytes` for model
    /// messages, `maxPingBytes` for Ping, `maxControlMessageBytes` for everything else (error
    /// replies and unknown types included); never above `maxMessageBytes`.
    public func maxMessageBytes(for type: MessageType, kind: MessageKind) -> Int {
        if Limits.carriesModel(type, kind) { return maxMessageBytes }
        if type == .ping && kind != .error { return Swift.min(maxPingBytes, maxMessageBytes) }
        return Swift.min(maxControlMessageBytes, maxMessageBytes)
    }

    /// What a bound is called in error messages and SPEC §11.
    public static func limitName(for type: MessageType, kind: MessageKind) -> String {
        if carriesModel(type, kind) { return "maxMessageBytes (model messages)" }
        if type == .ping && kind != .error { return "maxPingBytes" }
        return "maxControlMessageBytes"
    }
}
