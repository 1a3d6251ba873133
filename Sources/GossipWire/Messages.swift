// Message bodies: the payload layout of every request and reply (Protocol/SPEC.md,
// "Messages"). Encoders compute the exact size, then fill one ByteWriter in one pass and
// throw on values past `Limits`; decoders check every bound before allocating and throw a
// typed `WireError` naming the payload offset. `MessageBody` dispatches on (type, kind).

/// One peer-list entry: a peer's advertised endpoint and the identity it proved, if known.
///
/// Wire form (SPEC §5): `str endpoint, u8[32] identity`. The identity is the Curve25519 public
/// key the node proved in its channel handshake (SPEC §13); `nil` travels as 32 zero bytes and
/// means "not known" (a plaintext `--insecure` network, or not yet learnt). A receiver never
/// trusts an identity from a list: it checks it against what the endpoint proves when it
/// connects.
public struct PeerEntry: Sendable, Equatable, Hashable {
    /// Bytes of an identity on the wire (a Curve25519 public key).
    public static let identityByteCount = 32

    public var endpoint: String
    /// `nil` or exactly `identityByteCount` bytes; another length is refused on encode.
    public var identity: [UInt8]?

    /// - Parameter identity: 32 bytes, or `nil` for "not known"; 32 zero bytes are the wire's
    ///   "not known" too and are stored as `nil`, so an entry equals its decoded copy.
    public init(endpoint: String, identity: [UInt8]? = nil) {
        self.endpoint = endpoint
        if let id = identity, id.count == PeerEntry.identityByteCount, id.allSatisfy({ $0 == 0 }) {
            self.identity = nil
        } else {
            self.identity = identity
        }
    }

    /// Smallest encoded entry: an empty `str` and the identity.
    static let minEncodedSize = 2 + identityByteCount

    var encodedSize: Int { ByteWriter.size(ofString: endpoint) + PeerEntry.identityByteCount }
}

/// A peer list (`peerlist` in SPEC §5): `u32 count`, then per entry `str endpoint` and a
/// 32-byte identity (zero = not known).
public struct PeerList: Sendable, Equatable {
    public var entries: [PeerEntry]
    public init(entries: [PeerEntry]) { self.entries = entries }

    /// The entries' endpoints, in list order.
    public var endpoints: [String] { entries.map(\.endpoint) }

    var encodedSize: Int { 4 + entries.reduce(0) { $0 + $1.encodedSize } }

    func validate(limits: Limits) throws(WireError) {
        guard entries.count <= limits.maxPeers else {
            throw WireError(.limitExceeded, "\(entries.count) peers exceed the limit of \(limits.maxPeers)")
        }
        for e in entries {
            try checkName(e.endpoint, "peer endpoint", limits: limits)
            if let id = e.identity, id.count != PeerEntry.identityByteCount {
                throw WireError(.malformed, "the identity of peer \(e.endpoint) is \(id.count) bytes; an identity is a \(PeerEntry.identityByteCount)-byte Curve25519 public key, or nil when not known")
            }
        }
    }

    func write(_ w: inout ByteWriter) {
        w.write(UInt32(entries.count))
        for e in entries {
            w.writeString(e.endpoint)
            if let id = e.identity { w.write(bytes: id) } else { w.writeZeros(PeerEntry.identityByteCount) }
        }
    }

    static func read(_ r: inout ByteReader, limits: Limits) throws(WireError) -> PeerList {
        let at = r.position
        let n = try r.readUInt32("peer count")
        guard UInt64(n) <= UInt64(Swift.max(0, limits.maxPeers)) else {
            throw WireError(.limitExceeded, at: at, "\(n) peers exceed the limit of \(limits.maxPeers)")
        }
        // Every entry takes at least 34 bytes (an empty endpoint and the identity): a count
        // that cannot fit is refused before anything is reserved for it.
        guard Int(n) <= r.remaining / PeerEntry.minEncodedSize else {
            throw WireError(.truncated, at: at, "\(n) peer entries (at least \(PeerEntry.minEncodedSize) bytes each) cannot fit in the \(r.remaining) remaining bytes")
        }
        var entries: [PeerEntry] = []
        entries.reserveCapacity(Int(n))
        for i in 0..<Int(n) {
            let endpoint = try r.readString("peer \(i) endpoint", maxBytes: limits.maxNameBytes)
            let raw = try r.readBytes(PeerEntry.identityByteCount, "peer \(i) identity")
            let identity: [UInt8]? = raw.allSatisfy { $0 == 0 } ? nil : Array(raw)
            entries.append(PeerEntry(endpoint: endpoint, identity: identity))
        }
        return PeerList(entries: entries)
    }
}

/// Register request: the endpoint the sender listens on and its model's schema hash.
public struct RegisterRequest: Sendable, Equatable {
    public var endpoint: String
    public var schemaHash: UInt64
    public init(endpoint: String, schemaHash: UInt64) { self.endpoint = endpoint; self.schemaHash = schemaHash }

    /// Encodes the payload: `str endpoint, u64 schema_hash`.
    public func encode(limits: Limits = .default) throws(WireError) -> ByteSlice {
        try checkName(endpoint, "endpoint", limits: limits)
        var w = ByteWriter(capacity: ByteWriter.size(ofString: endpoint) + 8)
        w.writeString(endpoint)
        w.write(schemaHash)
        return ByteSlice(w.storage)
    }

    public static func decode(_ payload: ByteSlice, limits: Limits = .default) throws(WireError) -> RegisterRequest {
        try payload.read { (r) throws(WireError) in
            RegisterRequest(endpoint: try r.readString("endpoint", maxBytes: limits.maxNameBytes),
                            schemaHash: try r.readUInt64("schema hash"))
        }
    }
}

/// Register reply: the other live peers, and the network's architecture and schema hash.
public struct RegisterReply: Sendable, Equatable {
    public var peers: PeerList
    public var architecture: String
    public var schemaHash: UInt64
    public init(peers: PeerList, architecture: String, schemaHash: UInt64) {
        self.peers = peers; self.architecture = architecture; self.schemaHash = schemaHash
    }

    /// Encodes the payload: `peerlist peers, str architecture, u64 schema_hash`.
    public func encode(limits: Limits = .default) throws(WireError) -> ByteSlice {
        try peers.validate(limits: limits)
        try checkName(architecture, "architecture", limits: limits)
        var w = ByteWriter(capacity: peers.encodedSize + ByteWriter.size(ofString: architecture) + 8)
        peers.write(&w)
        w.writeString(architecture)
        w.write(schemaHash)
        return ByteSlice(w.storage)
    }

    public static func decode(_ payload: ByteSlice, limits: Limits = .default) throws(WireError) -> RegisterReply {
        try payload.read { (r) throws(WireError) in
            RegisterReply(peers: try PeerList.read(&r, limits: limits),
                          architecture: try r.readString("architecture", maxBytes: limits.maxNameBytes),
                          schemaHash: try r.readUInt64("schema hash"))
        }
    }
}

/// GetModel request: the schema hash the caller can use (0 = any).
public struct GetModelRequest: Sendable, Equatable {
    public var schemaHash: UInt64
    public init(schemaHash: UInt64) { self.schemaHash = schemaHash }

    /// Encodes the payload: `u64 schema_hash`.
    public func encode(limits: Limits = .default) throws(WireError) -> ByteSlice {
        var w = ByteWriter(capacity: 8)
        w.write(schemaHash)
        return ByteSlice(w.storage)
    }

    public static func decode(_ payload: ByteSlice, limits: Limits = .default) throws(WireError) -> GetModelRequest {
        try payload.read { (r) throws(WireError) in GetModelRequest(schemaHash: try r.readUInt64("schema hash")) }
    }
}

/// GossipExchange request: the sender's endpoint, its averaging weight and its model.
public struct GossipExchangeRequest: Sendable, Equatable {
    public var sender: String
    public var weight: Double
    public var model: ModelState
    public init(sender: String, weight: Double, model: ModelState) {
        self.sender = sender; self.weight = weight; self.model = model
    }

    /// Encodes the payload (`str sender, f64 weight, model`) from raw weights, copied once.
    ///
    /// - Parameter data: `table.dataByteCount` bytes of little-endian float32, in table order.
    public static func encode(sender: String, weight: Double, architecture: String, round: UInt64, step: UInt64,
                              samples: UInt64, table: TensorTable, data: UnsafeRawBufferPointer,
                              limits: Limits = .default, into buffer: PayloadBuffer? = nil) throws(WireError) -> ByteSlice {
        try encode(sender: sender, weight: weight, architecture: architecture, round: round, step: step,
                   samples: samples, table: table, dataByteCount: data.count, limits: limits, into: buffer) { dst in
            if data.count > 0 { dst.baseAddress!.copyMemory(from: data.baseAddress!, byteCount: data.count) }
        }
    }

    /// Encodes the payload, letting `fill` write the weights straight into the output buffer
    /// (e.g. tensor by tensor from separate storages).
    /// - Parameter buffer: when set, the payload is written into its reusable storage
    ///   (`PayloadBuffer`) instead of a new allocation; the result is a view of it.
    public static func encode(sender: String, weight: Double, architecture: String, round: UInt64, step: UInt64,
                              samples: UInt64, table: TensorTable, dataByteCount: Int, limits: Limits = .default,
                              into buffer: PayloadBuffer? = nil,
                              fill: (UnsafeMutableRawBufferPointer) -> Void) throws(WireError) -> ByteSlice {
        try checkName(sender, "sender", limits: limits)
        try checkWeight(weight)
        return try ModelState.encodePayload(
            prefixSize: ByteWriter.size(ofString: sender) + 8,
            writePrefix: { w in w.writeString(sender); w.write(weight) },
            architecture: architecture, round: round, step: step, samples: samples, table: table,
            dataCount: dataByteCount, limits: limits, buffer: buffer, fill: fill)
    }

    /// Encodes this request (into `buffer`'s reusable storage when given).
    public func encode(limits: Limits = .default, into buffer: PayloadBuffer? = nil) throws(WireError) -> ByteSlice {
        let m = model
        return try m.data.withUnsafeBytes { (d) throws(WireError) in
            try GossipExchangeRequest.encode(sender: sender, weight: weight, architecture: m.architecture,
                                             round: m.round, step: m.step, samples: m.samples, table: m.table,
                                             data: d, limits: limits, into: buffer)
        }
    }

    /// Decodes the payload; the model's `data` is a view into `payload`.
    /// - Parameter expectedSchemaHash: refuse (`.schemaMismatch`) another schema before reading weights.
    public static func decode(_ payload: ByteSlice, limits: Limits = .default,
                              expectedSchemaHash: UInt64? = nil) throws(WireError) -> GossipExchangeRequest {
        try payload.read { (r) throws(WireError) in
            let sender = try r.readString("sender", maxBytes: limits.maxNameBytes)
            let weight = try readWeight(&r)
            let model = try ModelState.read(&r, payload: payload, limits: limits, expectedSchemaHash: expectedSchemaHash)
            return GossipExchangeRequest(sender: sender, weight: weight, model: model)
        }
    }
}

/// GossipExchange reply: the responder's weight, its peers, and the averaged model.
public struct GossipExchangeReply: Sendable, Equatable {
    public var weight: Double
    public var peers: PeerList
    public var model: ModelState
    public init(weight: Double, peers: PeerList, model: ModelState) {
        self.weight = weight; self.peers = peers; self.model = model
    }

    /// Encodes the payload (`f64 weight, peerlist peers, model`) from raw weights, copied once.
    public static func encode(weight: Double, peers: PeerList, architecture: String, round: UInt64, step: UInt64,
                              samples: UInt64, table: TensorTable, data: UnsafeRawBufferPointer,
                              limits: Limits = .default, into buffer: PayloadBuffer? = nil) throws(WireError) -> ByteSlice {
        try encode(weight: weight, peers: peers, architecture: architecture, round: round, step: step,
                   samples: samples, table: table, dataByteCount: data.count, limits: limits, into: buffer) { dst in
            if data.count > 0 { dst.baseAddress!.copyMemory(from: data.baseAddress!, byteCount: data.count) }
        }
    }

    /// Encodes the payload, letting `fill` write the weights straight into the output buffer
    /// (`buffer`'s reusable storage when given, see `PayloadBuffer`).
    public static func encode(weight: Double, peers: PeerList, architecture: String, round: UInt64, step: UInt64,
                              samples: UInt64, table: TensorTable, dataByteCount: Int, limits: Limits = .default,
                              into buffer: PayloadBuffer? = nil,
                              fill: (UnsafeMutableRawBufferPointer) -> Void) throws(WireError) -> ByteSlice {
        try checkWeight(weight)
        try peers.validate(limits: limits)
        return try ModelState.encodePayload(
            prefixSize: 8 + peers.encodedSize,
            writePrefix: { w in w.write(weight); peers.write(&w) },
            architecture: architecture, round: round, step: step, samples: samples, table: table,
            dataCount: dataByteCount, limits: limits, buffer: buffer, fill: fill)
    }

    /// Encodes this reply (into `buffer`'s reusable storage when given).
    public func encode(limits: Limits = .default, into buffer: PayloadBuffer? = nil) throws(WireError) -> ByteSlice {
        let m = model
        return try m.data.withUnsafeBytes { (d) throws(WireError) in
            try GossipExchangeReply.encode(weight: weight, peers: peers, architecture: m.architecture,
                                           round: m.round, step: m.step, samples: m.samples, table: m.table,
                                           data: d, limits: limits, into: buffer)
        }
    }

    /// Decodes the payload; the model's `data` is a view into `payload`.
    public static func decode(_ payload: ByteSlice, limits: Limits = .default,
                              expectedSchemaHash: UInt64? = nil) throws(WireError) -> GossipExchangeReply {
        try payload.read { (r) throws(WireError) in
            let weight = try readWeight(&r)
            let peers = try PeerList.read(&r, limits: limits)
            let model = try ModelState.read(&r, payload: payload, limits: limits, expectedSchemaHash: expectedSchemaHash)
            return GossipExchangeReply(weight: weight, peers: peers, model: model)
        }
    }
}

/// Status reply (and TriggerGossip reply): a UTF-8 JSON object as `text`.
public struct StatusReply: Sendable, Equatable {
    public var json: String
    public init(json: String) { self.json = json }

    /// Encodes the payload: `text json`.
    public func encode(limits: Limits = .default) throws(WireError) -> ByteSlice {
        try checkText(json, "status JSON", limits: limits)
        var w = ByteWriter(capacity: ByteWriter.size(ofText: json))
        w.writeText(json)
        return ByteSlice(w.storage)
    }

    public static func decode(_ payload: ByteSlice, limits: Limits = .default) throws(WireError) -> StatusReply {
        try payload.read { (r) throws(WireError) in StatusReply(json: try r.readText("status JSON", maxBytes: limits.maxTextBytes)) }
    }
}

/// TriggerGossip request: the peer to gossip with now ("" = a random live peer).
public struct TriggerGossipRequest: Sendable, Equatable {
    public var peer: String
    public init(peer: String) { self.peer = peer }

    /// Encodes the payload: `str peer`.
    public func encode(limits: Limits = .default) throws(WireError) -> ByteSlice {
        try checkName(peer, "peer", limits: limits)
        var w = ByteWriter(capacity: ByteWriter.size(ofString: peer))
        w.writeString(peer)
        return ByteSlice(w.storage)
    }

    public static func decode(_ payload: ByteSlice, limits: Limits = .default) throws(WireError) -> TriggerGossipRequest {
        try payload.read { (r) throws(WireError) in TriggerGossipRequest(peer: try r.readString("peer", maxBytes: limits.maxNameBytes)) }
    }
}

/// Error reply body (frame flags `response|error`): a status code and a text for humans.
public struct ErrorReply: Sendable, Equatable, Error {
    public var code: StatusCode
    public var message: String
    public init(code: StatusCode, message: String) { self.code = code; self.message = message }

    /// The reply a receiver sends for a decode error.
    public init(_ error: WireError) { self.init(code: error.statusCode, message: error.description) }

    /// The reply to a frame of an unknown protocol version (UNIMPLEMENTED, naming ours).
    public static func unsupportedVersion(_ version: UInt8) -> ErrorReply {
        ErrorReply(code: .unimplemented, message: FrameHeader.unsupportedVersionText(version))
    }

    /// Encodes the payload: `u32 code, text message` (a message past the limit is cut at a character boundary).
    public func encode(limits: Limits = .default) throws(WireError) -> ByteSlice {
        var text = message
        if text.utf8.count > limits.maxTextBytes {
            var cut = limits.maxTextBytes
            let u = Array(text.utf8)
            while cut > 0, (u[cut] & 0xC0) == 0x80 { cut -= 1 }
            text = String(decoding: u[0..<cut], as: UTF8.self)
        }
        var w = ByteWriter(capacity: 4 + ByteWriter.size(ofText: text))
        w.write(code.rawValue)
        w.writeText(text)
        return ByteSlice(w.storage)
    }

    /// Decodes the payload; unknown code numbers become `.unknown`.
    public static func decode(_ payload: ByteSlice, limits: Limits = .default) throws(WireError) -> ErrorReply {
        try payload.read { (r) throws(WireError) in
            ErrorReply(code: StatusCode(wireValue: try r.readUInt32("status code")),
                       message: try r.readText("error message", maxBytes: limits.maxTextBytes))
        }
    }
}

/// Any message body, by message type and kind.
public enum MessageBody: Sendable, Equatable {
    case registerRequest(RegisterRequest)
    case registerReply(RegisterReply)
    case getModelRequest(GetModelRequest)
    case getModelReply(ModelState)
    case gossipExchangeRequest(GossipExchangeRequest)
    case gossipExchangeReply(GossipExchangeReply)
    case statusRequest
    case statusReply(StatusReply)
    /// Opaque bytes, echoed back in the reply.
    case pingRequest(ByteSlice)
    case pingReply(ByteSlice)
    case stopRequest
    case stopReply
    case triggerGossipRequest(TriggerGossipRequest)
    case triggerGossipReply(StatusReply)
    /// PushSum (SPEC §5.5): the sender's mass and de-biased model; the reply is empty.
    case pushSumRequest(PushSumRequest)
    case pushSumReply
    /// Reserve (SPEC §5.6): the request, and its empty reply (reserved).
    case reserveRequest(ReserveRequest)
    case reserveReply
    /// Votes (SPEC §5.7): request and reply share one layout.
    case votesRequest(VotesMessage)
    case votesReply(VotesMessage)
    /// WaitConverged (SPEC §5.8): the reply is JSON text, like TriggerGossip's.
    case waitConvergedRequest(WaitConvergedRequest)
    case waitConvergedReply(StatusReply)
    /// ModelPull and ModelPush (SPEC §5.12, external trainers; control socket only).
    case modelPullRequest(ModelPullRequest)
    case modelPullReply(ModelPullReply)
    case modelPushRequest(ModelPushRequest)
    case modelPushReply(ModelPushReply)
    /// An error reply to a request of type `type`.
    case error(type: MessageType, ErrorReply)

    /// The message type number this body travels under.
    public var type: MessageType {
        switch self {
        case .registerRequest, .registerReply: .register
        case .getModelRequest, .getModelReply: .getModel
        case .gossipExchangeRequest, .gossipExchangeReply: .gossipExchange
        case .statusRequest, .statusReply: .status
        case .pingRequest, .pingReply: .ping
        case .stopRequest, .stopReply: .stop
        case .triggerGossipRequest, .triggerGossipReply: .triggerGossip
        case .pushSumRequest, .pushSumReply: .pushSum
        case .reserveRequest, .reserveReply: .reserve
        case .votesRequest, .votesReply: .votes
        case .waitConvergedRequest, .waitConvergedReply: .waitConverged
        case .modelPullRequest, .modelPullReply: .modelPull
        case .modelPushRequest, .modelPushReply: .modelPush
        case .error(let type, _): type
        }
    }

    /// Request, reply or error reply.
    public var kind: MessageKind {
        switch self {
        case .registerRequest, .getModelRequest, .gossipExchangeRequest, .statusRequest, .pingRequest,
             .stopRequest, .triggerGossipRequest, .pushSumRequest, .reserveRequest, .votesRequest, .waitConvergedRequest,
             .modelPullRequest, .modelPushRequest: .request
        case .error: .error
        default: .response
        }
    }

    /// Encodes the payload.
    public func encode(limits: Limits = .default) throws(WireError) -> ByteSlice {
        switch self {
        case .registerRequest(let m): try m.encode(limits: limits)
        case .registerReply(let m): try m.encode(limits: limits)
        case .getModelRequest(let m): try m.encode(limits: limits)
        case .getModelReply(let m): try m.encode(limits: limits)
        case .gossipExchangeRequest(let m): try m.encode(limits: limits)
        case .gossipExchangeReply(let m): try m.encode(limits: limits)
        case .statusRequest, .stopRequest, .stopReply, .pushSumReply, .reserveReply: ByteSlice(ByteStorage(count: 0))
        case .statusReply(let m), .triggerGossipReply(let m): try m.encode(limits: limits)
        case .pingRequest(let b), .pingReply(let b): b
        case .triggerGossipRequest(let m): try m.encode(limits: limits)
        case .pushSumRequest(let m): try m.encode(limits: limits)
        case .reserveRequest(let m): try m.encode(limits: limits)
        case .votesRequest(let m), .votesReply(let m): try m.encode(limits: limits)
        case .waitConvergedRequest(let m): m.encode()
        case .waitConvergedReply(let m): try m.encode(limits: limits)
        case .modelPullRequest(let m): try m.encode(limits: limits)
        case .modelPullReply(let m): try m.encode(limits: limits)
        case .modelPushRequest(let m): try m.encode(limits: limits)
        case .modelPushReply(let m): try m.encode(limits: limits)
        case .error(_, let m): try m.encode(limits: limits)
        }
    }

    /// Decodes a payload received as `type`/`kind`.
    ///
    /// - Parameter expectedSchemaHash: for model-bearing messages, refuse another schema
    ///   (`.schemaMismatch`) before any weight byte is read.
    /// - Throws: `.unknownMessageType` for a type this version does not define, or the
    ///   body's typed error (offsets are payload offsets).
    public static func decode(type: MessageType, kind: MessageKind, payload: ByteSlice, limits: Limits = .default,
                              expectedSchemaHash: UInt64? = nil) throws(WireError) -> MessageBody {
        // An error reply has one layout whatever the type it answers.
        if kind == .error { return .error(type: type, try ErrorReply.decode(payload, limits: limits)) }
        guard type.isKnown else {
            throw WireError(.unknownMessageType, "message type \(type.rawValue) is not defined in this protocol version; answer UNIMPLEMENTED")
        }
        let request = kind == .request
        switch type {
        case .register:
            return request ? .registerRequest(try .decode(payload, limits: limits))
                           : .registerReply(try .decode(payload, limits: limits))
        case .getModel:
            return request ? .getModelRequest(try .decode(payload, limits: limits))
                           : .getModelReply(try .decode(payload, limits: limits, expectedSchemaHash: expectedSchemaHash))
        case .gossipExchange:
            return request ? .gossipExchangeRequest(try .decode(payload, limits: limits, expectedSchemaHash: expectedSchemaHash))
                           : .gossipExchangeReply(try .decode(payload, limits: limits, expectedSchemaHash: expectedSchemaHash))
        case .status:
            if request { try expectEmpty(payload, "Status request"); return .statusRequest }
            return .statusReply(try .decode(payload, limits: limits))
        case .ping:
            return request ? .pingRequest(payload) : .pingReply(payload)
        case .stop:
            try expectEmpty(payload, request ? "Stop request" : "Stop reply")
            return request ? .stopRequest : .stopReply
        case .pushSum:
            if request { return .pushSumRequest(try .decode(payload, limits: limits, expectedSchemaHash: expectedSchemaHash)) }
            try expectEmpty(payload, "PushSum reply")
            return .pushSumReply
        case .reserve:
            if request { return .reserveRequest(try .decode(payload, limits: limits)) }
            try expectEmpty(payload, "Reserve reply")
            return .reserveReply
        case .votes:
            return request ? .votesRequest(try .decode(payload, limits: limits))
                           : .votesReply(try .decode(payload, limits: limits))
        case .waitConverged:
            return request ? .waitConvergedRequest(try .decode(payload))
                           : .waitConvergedReply(try .decode(payload, limits: limits))
        case .modelPull:
            return request ? .modelPullRequest(try .decode(payload, limits: limits))
                           : .modelPullReply(try .decode(payload, limits: limits))
        case .modelPush:
            return request ? .modelPushRequest(try .decode(payload, limits: limits, expectedSchemaHash: expectedSchemaHash))
                           : .modelPushReply(try .decode(payload, limits: limits))
        default: // .triggerGossip
            return request ? .triggerGossipRequest(try .decode(payload, limits: limits))
                           : .triggerGossipReply(try .decode(payload, limits: limits))
        }
    }

    /// Decodes a received message's body.
    public static func decode(_ message: InboundMessage, limits: Limits = .default,
                              expectedSchemaHash: UInt64? = nil) throws(WireError) -> MessageBody {
        try decode(type: message.type, kind: message.kind, payload: message.payload, limits: limits,
                   expectedSchemaHash: expectedSchemaHash)
    }

    private static func expectEmpty(_ payload: ByteSlice, _ what: String) throws(WireError) {
        guard payload.count == 0 else {
            throw WireError(.lengthMismatch, at: 0, "\(what) must have an empty payload, got \(payload.count) bytes")
        }
    }
}

extension OutboundMessage {
    /// Encodes `body` and splits it into frames (see `init(type:kind:requestID:payload:...)`).
    public init(body: MessageBody, requestID: UInt32, compression: CompressionMode = .none,
                checksum: Bool = true, limits: Limits = .default) throws(WireError) {
        try self.init(type: body.type, kind: body.kind, requestID: requestID, payload: try body.encode(limits: limits),
                      compression: compression, checksum: checksum, limits: limits)
    }
}

func checkWeight(_ w: Double) throws(WireError) {
    guard w.isFinite, w >= 0 else {
        throw WireError(.malformed, "averaging weight \(w) must be finite and non-negative")
    }
}

func readWeight(_ r: inout ByteReader) throws(WireError) -> Double {
    let at = r.position
    let w = try r.readDouble("weight")
    guard w.isFinite, w >= 0 else {
        throw WireError(.malformed, at: at, "averaging weight \(w) must be finite and non-negative")
    }
    return w
}

extension ByteSlice {
    /// Runs `body` with a reader over the slice and requires it to consume every byte.
    func read<T>(_ body: (inout ByteReader) throws(WireError) -> T) throws(WireError) -> T {
        try withUnsafeBytes { (bytes) throws(WireError) -> T in
            var r = ByteReader(bytes)
            let v = try body(&r)
            try r.expectEnd("the message fields")
            return v
        }
    }
}
