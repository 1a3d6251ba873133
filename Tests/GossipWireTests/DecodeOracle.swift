// The checks that the fuzzer (tools/fuzz) and the bad-input tests run on any input: decoding
// either succeeds or throws a typed WireError whose offset lies inside the input, and what
// decodes re-encodes to exactly the payload it came from and decodes back to the same value.
// Public GossipWire API only: tools/fuzz/run.sh compiles this file into the fuzz binary.
import GossipWire

/// Decodes wire input and checks the codec's promises; returns what went wrong, never traps
/// on its own (a trap inside the decoder is the bug the fuzzer looks for).
enum DecodeOracle {
    /// Small bounds, so that no input can make a check allocate more than a few MiB.
    static let limits: Limits = {
        var l = Limits()
        l.maxFrameBytes = 64 << 10
        l.maxMessageBytes = 1 << 20
        l.chunkBytes = 1 << 10
        l.maxTextBytes = 4 << 10
        l.maxTensors = 64
        l.maxPeers = 64
        return l
    }()

    /// Message types the body fuzzer decodes payloads as: every defined one, the connection
    /// type, and one undefined number.
    static let bodyTypes: [MessageType] = MessageType.known + [.connection, MessageType(rawValue: 99)]
    static let kinds: [MessageKind] = [.request, .response, .error]

    /// How a frame stream ended.
    struct StreamResult: Equatable {
        var bodies: [Result<MessageBody, WireError>] = []
        var requestIDs: [UInt32] = []
        var error: WireError?
    }

    /// Feeds `bytes` to a `MessageDecoder` (in two pieces cut at `split`, if given), then
    /// decodes every complete message's body. Adds a violation for an error offset outside
    /// the stream and for a body that does not round-trip.
    static func decodeStream(_ bytes: [UInt8], split: Int? = nil, limits: Limits = limits,
                             expectedSchemaHash: UInt64? = nil, violations: inout [String]) -> StreamResult {
        var result = StreamResult()
        let d = MessageDecoder(limits: limits)
        func drain() {
            while let m = d.nextMessage() {
                result.requestIDs.append(m.requestID)
                let body = Result { () throws(WireError) in try MessageBody.decode(m, limits: limits, expectedSchemaHash: expectedSchemaHash) }
                switch body {
                case .success(let b):
                    checkCanonical(b, payload: m.payload, limits: limits, violations: &violations)
                    checkRoundTrip(b, limits: limits, violations: &violations)
                case .failure(let e): checkOffset(e, within: m.payload.count, "body of message \(m.requestID)", &violations)
                }
                result.bodies.append(body)
            }
        }
        do {
            let cut = min(max(split ?? bytes.count, 0), bytes.count)
            try d.append(Array(bytes[..<cut]))
            drain()
            if cut < bytes.count { try d.append(Array(bytes[cut...])) }
            drain()
            try d.finish()
        } catch {
            checkOffset(error, within: bytes.count, "frame stream", &violations)
            result.error = error
        }
        drain()
        return result
    }

    /// Decodes `payload` as a body of `type`/`kind`; on success checks the round trip, on
    /// failure the error offset. Model-bearing bodies are also decoded against their own
    /// schema hash (must succeed) and another (must be refused with `.schemaMismatch`).
    static func decodeBody(type: MessageType, kind: MessageKind, payload: [UInt8], limits: Limits = limits,
                           violations: inout [String]) -> Result<MessageBody, WireError> {
        let slice = ByteSlice(ByteStorage(copying: payload))
        let body = Result { () throws(WireError) in try MessageBody.decode(type: type, kind: kind, payload: slice, limits: limits) }
        switch body {
        case .failure(let e):
            checkOffset(e, within: payload.count, "\(type) \(kind) body", &violations)
        case .success(let b):
            checkCanonical(b, payload: slice, limits: limits, violations: &violations)
            checkRoundTrip(b, limits: limits, violations: &violations)
            if let model = b.model {
                let hash = model.table.schemaHash
                do {
                    _ = try MessageBody.decode(type: type, kind: kind, payload: slice, limits: limits, expectedSchemaHash: hash)
                } catch {
                    violations.append("\(type) \(kind): refused against its own schema hash: \(error)")
                }
                do {
                    _ = try MessageBody.decode(type: type, kind: kind, payload: slice, limits: limits, expectedSchemaHash: hash ^ 1)
                    violations.append("\(type) \(kind): accepted against another schema hash")
                } catch where error.kind == .schemaMismatch {
                } catch {
                    violations.append("\(type) \(kind): another schema hash refused with \(error), not schemaMismatch")
                }
                var floats = [Float](repeating: 0, count: model.data.count / 4)
                do {
                    try model.copyData(into: &floats)
                } catch {
                    violations.append("\(type) \(kind): decoded model's data cannot be copied out: \(error)")
                }
            }
        }
        return body
    }

    /// Bodies have one encoding: what decodes re-encodes to exactly the payload it came from
    /// (so a decoder that reads a field wrongly, or accepts a non-canonical form, shows here),
    /// except an error reply's unknown status number, which reads as UNKNOWN.
    static func checkCanonical(_ b: MessageBody, payload: ByteSlice, limits: Limits, violations: inout [String]) {
        var expected = payload.array
        if case .error = b, expected.count >= 4 {
            let wire = UInt32(expected[0]) | UInt32(expected[1]) << 8 | UInt32(expected[2]) << 16 | UInt32(expected[3]) << 24
            if StatusCode(rawValue: wire) == nil {      // SPEC §8: unknown numbers are read as UNKNOWN (2)
                expected.replaceSubrange(0..<4, with: [UInt8(StatusCode.unknown.rawValue), 0, 0, 0])
            }
        }
        do {
            if try b.encode(limits: limits).array != expected {
                violations.append("\(b.type) \(b.kind): encode(decode(payload)) differs from the payload")
            }
        } catch {
            violations.append("\(b.type) \(b.kind): a decoded body fails to re-encode: \(error)")
        }
    }

    /// decode(encode(b)) == b, encode is byte-stable, and the framed message decodes back.
    static func checkRoundTrip(_ b: MessageBody, limits: Limits, violations: inout [String]) {
        do {
            let payload = try b.encode(limits: limits)
            let again = try MessageBody.decode(type: b.type, kind: b.kind, payload: payload, limits: limits)
            if again != b { violations.append("\(b.type) \(b.kind): decode(encode(body)) differs from body") }
            if try again.encode(limits: limits) != payload {
                violations.append("\(b.type) \(b.kind): encoding is not byte-stable")
            }
            for compression in [CompressionMode.none, .zlib(level: 1, shuffle: true)] {
                let framed = try OutboundMessage(body: b, requestID: 7, compression: compression, checksum: true, limits: limits).serialized()
                let d = MessageDecoder(limits: limits)
                try d.append(framed)
                try d.finish()
                guard let m = d.nextMessage(), d.nextMessage() == nil else {
                    violations.append("\(b.type) \(b.kind): re-framed body (\(compression)) is not exactly one message")
                    continue
                }
                if try MessageBody.decode(m, limits: limits) != b {
                    violations.append("\(b.type) \(b.kind): re-framed body (\(compression)) decodes differently")
                }
            }
        } catch {
            violations.append("\(b.type) \(b.kind): a decoded body fails to re-encode or re-decode: \(error)")
        }
    }

    static func checkOffset(_ e: WireError, within count: Int, _ what: String, _ violations: inout [String]) {
        if let o = e.offset, o < 0 || o > count {
            violations.append("\(what): error offset \(o) is outside the \(count) input bytes: \(e)")
        }
        if e.message.isEmpty { violations.append("\(what): \(e.kind) error without a message") }
    }

    /// The fuzz entry: the first byte selects the target. Selector % 4 == 0: the bytes after
    /// it are a frame stream (the second byte picks the split point of a two-piece feed, and
    /// the result must equal the one-piece feed). Otherwise the next byte picks a message
    /// type and kind and the rest is that body's payload (tensor payloads included), decoded
    /// under the small fuzz limits, or under the default limits when selector % 4 == 2 (a
    /// body is at most the input, so that allocates little too).
    static func fuzzOne(_ data: [UInt8]) -> [String] {
        guard let selector = data.first else { return [] }
        var violations: [String] = []
        let rest = Array(data.dropFirst())
        if selector % 4 == 0 {
            guard let cut = rest.first else { return [] }
            let stream = Array(rest.dropFirst())
            let whole = decodeStream(stream, violations: &violations)
            let split = decodeStream(stream, split: Int(cut) * stream.count / 256, violations: &violations)
            if whole != split {
                violations.append("frame stream: feeding it in two pieces gives \(split), in one \(whole)")
            }
        } else {
            guard let pick = rest.first else { return [] }
            let type = bodyTypes[Int(pick) % bodyTypes.count]
            let kind = kinds[Int(pick) / bodyTypes.count % kinds.count]
            _ = decodeBody(type: type, kind: kind, payload: Array(rest.dropFirst()),
                           limits: selector % 4 == 2 ? .default : limits, violations: &violations)
        }
        return violations
    }
}

extension MessageBody {
    /// The model a body carries, if any.
    var model: ModelState? {
        switch self {
        case .getModelReply(let m): m
        case .gossipExchangeRequest(let r): r.model
        case .gossipExchangeReply(let r): r.model
        default: nil
        }
    }
}
