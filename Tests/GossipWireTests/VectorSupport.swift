// The golden vectors' definitions (Protocol/vectors/*.hex) and the hex file format:
// `#` comment lines, then hex bytes with whitespace ignored. `VectorTests` regenerates the
// files when GOSSIP_REGEN_VECTORS=1 and otherwise checks them byte for byte.
import Foundation
@testable import GossipWire

/// One golden vector: a message body and how it was framed.
struct VectorSpec {
    let name: String
    let comment: String
    let body: MessageBody
    let requestID: UInt32
    var compression: CompressionMode = .none
    var checksum: Bool = true
    var chunkBytes: Int? = nil

    var limits: Limits {
        var l = Limits()
        if let chunkBytes { l.chunkBytes = chunkBytes }
        return l
    }

    func encode() throws -> [UInt8] {
        try OutboundMessage(body: body, requestID: requestID, compression: compression,
                            checksum: checksum, limits: limits).serialized()
    }
}

enum Fixtures {
    static let tensors = [TensorInfo(name: "layers.0.weight", shape: [2, 3]), TensorInfo(name: "layers.0.bias", shape: [2])]
    static let table = TensorTable(tensors: tensors)
    static let weights: [Float] = [0.5, -1.25, 2.0, 0.125, -0.0625, 3.5, 0.25, -0.75]

    static func model(_ values: [Float] = weights, round: UInt64 = 3, step: UInt64 = 120, samples: UInt64 = 7680) -> ModelState {
        let data = values.withUnsafeBytes { ByteSlice(ByteStorage(copying: $0)) }
        return ModelState(architecture: "3,2", round: round, step: step, samples: samples, table: table, data: data)
    }

    static let averaged: [Float] = [0.375, -1.0, 1.5, 0.25, 0.0, 3.0, 0.5, -0.5]

    static let hash = table.schemaHash
    /// A known identity (RFC 7748 §6.1's example X25519 public key, Alice's) and an unknown one.
    static let identity7002: [UInt8] = hexBytes("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
    static let peers = PeerList(entries: [PeerEntry(endpoint: "127.0.0.1:7002", identity: identity7002),
                                          PeerEntry(endpoint: "127.0.0.1:7003", identity: nil)])

    static func hexBytes(_ s: String) -> [UInt8] {
        let u = Array(s.utf8)
        return stride(from: 0, to: u.count, by: 2).map { UInt8(String(decoding: u[$0..<($0 + 2)], as: UTF8.self), radix: 16)! }
    }
    static let pingBytes = ByteSlice(ByteStorage(copying: [0x70, 0x69, 0x6e, 0x67, 0x00, 0x01, 0x02, 0x03] as [UInt8]))

    static let specs: [VectorSpec] = [
        VectorSpec(name: "register_request", comment: "Register request: endpoint 127.0.0.1:7001, schema hash of the 3,2 model", body: .registerRequest(RegisterRequest(endpoint: "127.0.0.1:7001", schemaHash: hash)), requestID: 1),
        VectorSpec(name: "register_request_zlib", comment: "Register request as above, compressed (zlib level 6, no shuffle)", body: .registerRequest(RegisterRequest(endpoint: "127.0.0.1:7001", schemaHash: hash)), requestID: 1, compression: .zlib(level: 6, shuffle: false)),
        VectorSpec(name: "register_reply", comment: "Register reply: two peers (127.0.0.1:7002 with a known identity, 127.0.0.1:7003 unknown: zero), architecture 3,2, schema hash", body: .registerReply(RegisterReply(peers: peers, architecture: "3,2", schemaHash: hash)), requestID: 1),
        VectorSpec(name: "getmodel_request", comment: "GetModel request for schema hash of the 3,2 model", body: .getModelRequest(GetModelRequest(schemaHash: hash)), requestID: 2),
        VectorSpec(name: "getmodel_reply", comment: "GetModel reply: ModelState with layers.0.weight [2,3] and layers.0.bias [2], uncompressed", body: .getModelReply(model()), requestID: 2),
        VectorSpec(name: "getmodel_reply_zlib_shuffle", comment: "GetModel reply as above, byte-shuffled then zlib level 6", body: .getModelReply(model()), requestID: 2, compression: .zlib(level: 6, shuffle: true)),
        VectorSpec(name: "gossip_exchange_request", comment: "GossipExchange request: sender 127.0.0.1:7001, weight 600, model; no checksum (bulk tensor frames may omit it)", body: .gossipExchangeRequest(GossipExchangeRequest(sender: "127.0.0.1:7001", weight: 600, model: model())), requestID: 3, checksum: false),
        VectorSpec(name: "gossip_exchange_request_chunked", comment: "GossipExchange request as above, checksummed, split into frames of 64 payload bytes (limits.chunkBytes = 64)", body: .gossipExchangeRequest(GossipExchangeRequest(sender: "127.0.0.1:7001", weight: 600, model: model())), requestID: 4, chunkBytes: 64),
        VectorSpec(name: "gossip_exchange_reply", comment: "GossipExchange reply: weight 400, two peers (one identity known, one unknown), the averaged model; zlib level 1", body: .gossipExchangeReply(GossipExchangeReply(weight: 400, peers: peers, model: model(averaged, round: 4, step: 160, samples: 10240))), requestID: 3, compression: .zlib(level: 1, shuffle: false)),
        VectorSpec(name: "gossip_exchange_reply_chunked_shuffle", comment: "GossipExchange reply as above, chunks of 64 bytes (limits.chunkBytes = 64), each byte-shuffled then zlib level 6", body: .gossipExchangeReply(GossipExchangeReply(weight: 400, peers: peers, model: model(averaged, round: 4, step: 160, samples: 10240))), requestID: 4, compression: .zlib(level: 6, shuffle: true), chunkBytes: 64),
        VectorSpec(name: "status_request", comment: "Status request: empty payload", body: .statusRequest, requestID: 5),
        VectorSpec(name: "status_reply", comment: "Status reply: JSON text; only role is required (SPEC 5.4)", body: .statusReply(StatusReply(json: #"{"role":"peer","phase":"training","round":3,"peers":["127.0.0.1:7002"]}"#)), requestID: 5),
        VectorSpec(name: "ping_request", comment: "Ping request: 8 opaque bytes", body: .pingRequest(pingBytes), requestID: 6),
        VectorSpec(name: "ping_reply", comment: "Ping reply: the same 8 bytes echoed", body: .pingReply(pingBytes), requestID: 6),
        VectorSpec(name: "stop_request", comment: "Stop request: empty payload, no checksum", body: .stopRequest, requestID: 7, checksum: false),
        VectorSpec(name: "stop_reply", comment: "Stop reply: empty payload", body: .stopReply, requestID: 7),
        VectorSpec(name: "trigger_gossip_request", comment: "TriggerGossip request: empty peer = pick a random live peer", body: .triggerGossipRequest(TriggerGossipRequest(peer: "")), requestID: 8),
        VectorSpec(name: "trigger_gossip_request_peer", comment: "TriggerGossip request naming peer 127.0.0.1:7002", body: .triggerGossipRequest(TriggerGossipRequest(peer: "127.0.0.1:7002")), requestID: 9),
        VectorSpec(name: "trigger_gossip_reply", comment: "TriggerGossip reply after a successful exchange: JSON text, peer and relative_l2_change (SPEC 5.4)", body: .triggerGossipReply(StatusReply(json: #"{"peer":"127.0.0.1:7002","relative_l2_change":0.0123}"#)), requestID: 8),
        VectorSpec(name: "push_sum_request", comment: "PushSum request: sender 127.0.0.1:7001, mass 300 (half of 600), the de-biased model; no checksum (SPEC 5.5)", body: .pushSumRequest(PushSumRequest(sender: "127.0.0.1:7001", mass: 300, model: model())), requestID: 12, checksum: false),
        VectorSpec(name: "push_sum_reply", comment: "PushSum reply: empty payload = the mass was added (SPEC 5.5)", body: .pushSumReply, requestID: 12),
        VectorSpec(name: "votes_request", comment: "Votes request (SPEC 5.7): sender 127.0.0.1:7001, flags 0 (not finished), voters 127.0.0.1:7001 and 127.0.0.1:7002", body: .votesRequest(VotesMessage(sender: "127.0.0.1:7001", flags: 0, voters: ["127.0.0.1:7001", "127.0.0.1:7002"])), requestID: 12),
        VectorSpec(name: "votes_reply_finished", comment: "Votes reply (SPEC 5.7): responder 127.0.0.1:7002 has finished (flags bit 0), voters 127.0.0.1:7001, 127.0.0.1:7002, 127.0.0.1:7003", body: .votesReply(VotesMessage(sender: "127.0.0.1:7002", flags: 1, voters: ["127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"])), requestID: 12),
        VectorSpec(name: "wait_converged_request", comment: "WaitConverged request (SPEC 5.8): timeout_ms 60000", body: .waitConvergedRequest(WaitConvergedRequest(timeoutMs: 60000)), requestID: 13),
        VectorSpec(name: "error_busy", comment: "Error reply to GossipExchange: ABORTED (10), the peer is busy in another exchange", body: .error(type: .gossipExchange, ErrorReply(code: .aborted, message: "busy: already in an exchange; try another peer")), requestID: 3),
        VectorSpec(name: "error_schema_mismatch", comment: "Error reply to GetModel for schema 0x0123456789abcdef from a node serving the 3,2 model: FAILED_PRECONDITION (9)", body: .error(type: .getModel, ErrorReply(code: .failedPrecondition, message: "requested schema 0123456789abcdef but this network's is 25958d0cab31add1")), requestID: 2),
        VectorSpec(name: "error_unsupported_version", comment: "Connection-level error reply (type 0xFFFF, id 0) to a frame of version 3: UNIMPLEMENTED (12), sent in version 2 framing before closing", body: .error(type: .connection, ErrorReply.unsupportedVersion(3)), requestID: 0),
        VectorSpec(name: "error_unknown_type", comment: "Error reply to unknown message type 99: UNIMPLEMENTED (12)", body: .error(type: MessageType(rawValue: 99), ErrorReply(code: .unimplemented, message: "no handler for message type 99 (Unknown(99)) on this server")), requestID: 10),
        VectorSpec(name: "error_resource_exhausted_zlib", comment: "Error reply RESOURCE_EXHAUSTED (8) to a Register whose endpoint is 300 bytes (limit 256), compressed (zlib level 6)", body: .error(type: .register, ErrorReply(code: .resourceExhausted, message: "endpoint is 300 bytes, above the limit of 256 (at byte offset 0, limitExceeded)")), requestID: 11, compression: .zlib(level: 6, shuffle: false)),
        VectorSpec(name: "reserve_request", comment: "Reserve request (SPEC 5.6): sender 127.0.0.1:7001, schema hash of the 3,2 model, lease 2000 ms", body: .reserveRequest(ReserveRequest(sender: "127.0.0.1:7001", schemaHash: hash, leaseMs: 2000)), requestID: 12),
        VectorSpec(name: "reserve_reply", comment: "Reserve reply (SPEC 5.6): empty payload = the slot is reserved for the sender", body: .reserveReply, requestID: 12),
        VectorSpec(name: "model_pull_request", comment: "ModelPull request (SPEC 5.12): empty path = send the model inline", body: .modelPullRequest(ModelPullRequest(path: "")), requestID: 14),
        VectorSpec(name: "model_pull_request_path", comment: "ModelPull request (SPEC 5.12): the node writes the model to /tmp/m.safetensors", body: .modelPullRequest(ModelPullRequest(path: "/tmp/m.safetensors")), requestID: 15),
        VectorSpec(name: "model_pull_reply", comment: "ModelPull reply (SPEC 5.12): version 0x1000000000001, form 0 (inline), the 3,2 model; no checksum", body: .modelPullReply(ModelPullReply(version: 0x1_0000_0000_0001, body: .inline(model()))), requestID: 14, checksum: false),
        VectorSpec(name: "model_pull_reply_file", comment: "ModelPull reply (SPEC 5.12): version 0x1000000000001, form 1 (file), 168 bytes written", body: .modelPullReply(ModelPullReply(version: 0x1_0000_0000_0001, body: .file(byteCount: 168))), requestID: 15),
        VectorSpec(name: "model_push_request", comment: "ModelPush request (SPEC 5.12): base version 0x1000000000001, 1280 samples in 10 steps, inline model (the averaged weights); no checksum", body: .modelPushRequest(ModelPushRequest(baseVersion: 0x1_0000_0000_0001, samples: 1280, steps: 10, path: "", model: model(averaged, round: 0, step: 0, samples: 0))), requestID: 16, checksum: false),
        VectorSpec(name: "model_push_request_path", comment: "ModelPush request (SPEC 5.12): base version 0x1000000000001, 1280 samples in 10 steps, the node reads /tmp/t.safetensors", body: .modelPushRequest(ModelPushRequest(baseVersion: 0x1_0000_0000_0001, samples: 1280, steps: 10, path: "/tmp/t.safetensors", model: nil)), requestID: 17),
        VectorSpec(name: "model_push_reply", comment: "ModelPush reply (SPEC 5.12): new version 0x1000000000003, relative L2 change 0.0123", body: .modelPushReply(ModelPushReply(version: 0x1_0000_0000_0003, relativeL2Change: 0.0123)), requestID: 16),
        VectorSpec(name: "error_reserve_busy", comment: "Error reply to Reserve: ABORTED (10), the responder's slot is taken (SPEC 5.6)", body: .error(type: .reserve, ErrorReply(code: .aborted, message: "busy: the exchange slot is taken; try another peer")), requestID: 12),
    ]
}

enum HexFile {
    /// Parses a vector file: drops `#` lines, ignores whitespace.
    static func parse(_ text: String) throws -> [UInt8] {
        var hex: [UInt8] = []
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) where !line.hasPrefix("#") {
            for c in line.utf8 where c != 0x20 && c != 0x09 && c != 0x0d { hex.append(c) }
        }
        guard hex.count % 2 == 0 else { throw HexError.odd }
        var out: [UInt8] = []
        out.reserveCapacity(hex.count / 2)
        func nib(_ c: UInt8) throws -> UInt8 {
            switch c {
            case 0x30...0x39: return c - 0x30
            case 0x61...0x66: return c - 0x61 + 10
            case 0x41...0x46: return c - 0x41 + 10
            default: throw HexError.badDigit
            }
        }
        var i = 0
        while i < hex.count { out.append(try nib(hex[i]) << 4 | nib(hex[i + 1])); i += 2 }
        return out
    }

    enum HexError: Error { case odd, badDigit }

    /// Formats frames: a comment, then per frame the 24 header bytes on one line and the
    /// payload 32 bytes per line, a blank line between frames.
    static func format(comment: String, params: String, bytes: [UInt8]) -> String {
        var s = "# \(comment)\n# \(params)\n"
        var at = 0
        func hex(_ b: ArraySlice<UInt8>) -> String { b.map { String(format: "%02x", $0) }.joined(separator: " ") }
        while at + 24 <= bytes.count {
            let len = Int(UInt32(bytes[at]) | UInt32(bytes[at + 1]) << 8 | UInt32(bytes[at + 2]) << 16 | UInt32(bytes[at + 3]) << 24)
            s += hex(bytes[at..<(at + 24)]) + "\n"
            var p = at + 24
            while p < at + len { let e = min(at + len, p + 32); s += hex(bytes[p..<e]) + "\n"; p = e }
            at += len
            if at < bytes.count { s += "\n" }
        }
        return s
    }

    static var vectorsDirectory: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Protocol/vectors")
    }
}
