// WireCodec helpers of the end of training (SPEC §5.7 Votes, §5.8 WaitConverged).
import Foundation
import GossipWire

extension WireCodec {
    static func encode(_ m: VotesMessage) throws(WireError) -> ByteSlice { try m.encode(limits: limits) }
    static func decodeVotes(_ p: ByteSlice) throws(WireError) -> VotesMessage { try .decode(p, limits: limits) }
    static func encode(_ m: WaitConvergedRequest) -> ByteSlice { m.encode() }
    static func decodeWaitConvergedRequest(_ p: ByteSlice) throws(WireError) -> WaitConvergedRequest { try .decode(p) }

    /// The payload of a WaitConverged reply (SPEC §5.8): `text json` holding `result.json()`.
    static func encodeWaitConvergedReply(_ result: WaitConvergedResult) throws(WireError) -> ByteSlice {
        try StatusReply(json: result.json()).encode(limits: limits)
    }

    /// Reads a WaitConverged reply payload.
    static func decodeWaitConvergedReply(_ p: ByteSlice) throws -> WaitConvergedResult {
        try WaitConvergedResult(json: try decodeStatusReply(p).json)
    }
}

/// The reply to WaitConverged (SPEC §5.8): the node has finished training. JSON object
/// `{"accuracy":0.95,"endpoint":"HOST:PORT","final_model":"PATH","phase":"done","round":N,"voters":V}`,
/// sorted keys; `accuracy` and `final_model` may be null (not evaluated / no --state-dir).
public struct WaitConvergedResult: Sendable, Equatable {
    public var endpoint: String
    /// "done" (serving the final model) or "stopping" (exiting after writing it).
    public var phase: String
    public var round: Int
    /// Held-out accuracy of the final model, a fraction; nil when not known.
    public var accuracy: Double?
    /// Where the final model was written; nil without --state-dir.
    public var finalModel: String?
    /// Done votes the node knew when it finished.
    public var voters: Int

    public init(endpoint: String, phase: String, round: Int, accuracy: Double?, finalModel: String?, voters: Int) {
        self.endpoint = endpoint
        self.phase = phase
        self.round = round
        self.accuracy = accuracy
        self.finalModel = finalModel
        self.voters = voters
    }

    /// The JSON text (sorted keys).
    public func json() -> String {
        jsonText(["endpoint": endpoint, "phase": phase, "round": round,
                  "accuracy": accuracy.flatMap { $0.isFinite ? $0 as Any : nil } ?? NSNull(),
                  "final_model": finalModel.map { $0 as Any } ?? NSNull(), "voters": voters])
    }

    /// Reads the object a node sent (unknown keys ignored).
    /// - Throws: `NodeError` naming the missing key.
    public init(json text: String) throws {
        guard let obj = (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any] else {
            throw NodeError("WaitConverged reply is not a JSON object: \(text.prefix(200))")
        }
        guard let endpoint = obj["endpoint"] as? String, let phase = obj["phase"] as? String,
              let round = (obj["round"] as? NSNumber)?.intValue else {
            throw NodeError("WaitConverged reply lacks endpoint, phase or round: \(text.prefix(200))")
        }
        self.init(endpoint: endpoint, phase: phase, round: round,
                  accuracy: (obj["accuracy"] as? NSNumber)?.doubleValue,
                  finalModel: obj["final_model"] as? String,
                  voters: (obj["voters"] as? NSNumber)?.intValue ?? 0)
    }
}
