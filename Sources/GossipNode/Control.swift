// What gossipctl does, as library calls that tests reach: one request per command against a
// node, with results rendered as text for people or as one JSON object for scripts.
import Foundation
import GossipML
import GossipNet
import GossipWire

/// gossipctl's exit codes (documented in README.md and `gossipctl --help`).
public enum ControlExitCode: Int32, Sendable {
    case ok = 0
    /// Anything unexpected.
    case failure = 1
    /// Bad command line.
    case usage = 64
    /// The node could not be reached or did not answer in time.
    case unreachable = 69
    /// The node answered with an error status.
    case remoteError = 70
    /// An input file (a key file) could not be read, or was refused (not mode 0600, malformed).
    case cannotRead = 66
    /// The output file could not be written.
    case cannotWrite = 73
    /// `wait --converged`: the node was reachable but had not finished training within --timeout.
    case notConverged = 3
}

/// A failed gossipctl command: the exit code, a message, and the wire status if any.
public struct ControlFailure: Error, CustomStringConvertible, Sendable {
    public let exitCode: ControlExitCode
    public let message: String
    public let status: StatusCode?
    public var description: String { message }

    public init(exitCode: ControlExitCode, message: String, status: StatusCode?) {
        self.exitCode = exitCode
        self.message = message
        self.status = status
    }

    /// The failure as one JSON object (`{"error":{...}}`).
    public var json: String {
        var err: [String: Any] = ["message": message, "exit_code": Int(exitCode.rawValue)]
        if let status { err["status"] = status.name; err["status_code"] = Int(status.rawValue) }
        return jsonText(["error": err])
    }
}

/// `object` as compact JSON with sorted keys ("{}" if it cannot be encoded).
public func jsonText(_ object: Any) -> String {
    guard let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]) else { return "{}" }
    return String(decoding: data, as: UTF8.self)
}

/// The reply to a TriggerGossip request that ran its exchange (SPEC §5.4): a JSON object
/// `{"peer":"HOST:PORT","relative_l2_change":0.0123}`, both keys always present, in that
/// order. A failed exchange is answered with an error reply instead, never with this.
public struct TriggerGossipResult: Sendable, Equatable {
    /// The peer the exchange ran with, as HOST:PORT.
    public var peer: String
    /// How far this node's weights moved: `‖after − before‖₂ / ‖before‖₂` over all its
    /// float32 weights, a plain ratio (0.0123 = 1.23 %); 0 when the two models were identical.
    /// Finite and ≥ 0.
    public var relativeL2Change: Double

    public init(peer: String, relativeL2Change: Double) {
        self.peer = peer
        self.relativeL2Change = relativeL2Change
    }

    /// The JSON text: fixed key order, the number in Swift's shortest round-trip form.
    /// - Throws: `WireError(.malformed)` when `relativeL2Change` is negative or not finite.
    public func json() throws(WireError) -> String {
        guard relativeL2Change.isFinite, relativeL2Change >= 0 else {
            throw WireError(.malformed, "relative_l2_change \(relativeL2Change) must be finite and non-negative")
        }
        return #"{"peer":"# + JSONString.quote(peer) + #","relative_l2_change":"# + "\(relativeL2Change)" + "}"
    }

    /// Reads the JSON object a node sent (keys it does not know are ignored).
    /// - Throws: `NodeError` naming the missing or mistyped key.
    public init(json text: String) throws {
        guard let obj = (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any] else {
            throw NodeError("TriggerGossip reply is not a JSON object: \(text.prefix(200))")
        }
        guard let peer = obj["peer"] as? String else {
            throw NodeError("TriggerGossip reply has no string \"peer\": \(text.prefix(200))")
        }
        let number = obj["relative_l2_change"]
        guard let change = (number as? NSNumber)?.doubleValue, change.isFinite, change >= 0 else {
            throw NodeError("TriggerGossip reply has no non-negative number \"relative_l2_change\": \(text.prefix(200))")
        }
        self.init(peer: peer, relativeL2Change: change)
    }

}

/// A client for one node's control requests, over TCP (encrypted when given a
/// `ChannelSecurity`) or over the node's Unix-domain control socket.
public final class Control: @unchecked Sendable {
    /// The node's TCP endpoint; with a control socket, a stand-in that is never dialed.
    public let endpoint: Endpoint
    /// The node's control socket, when talking over it.
    public let socketPath: String?
    public let timeout: Duration
    private let client: RPCClient

    /// Talks to the node at `endpoint` over TCP; `security` (the network key and this
    /// client's identity) when the node runs encrypted.
    public init(endpoint: Endpoint, timeout: Duration, security: ChannelSecurity? = nil) {
        self.endpoint = endpoint
        self.socketPath = nil
        self.timeout = timeout
        self.client = security.map { RPCClient(security: $0) } ?? RPCClient()
    }

    /// Talks to the node over its control socket at `socketPath` (plaintext; the socket's mode
    /// 0600 is the authentication), where it accepts control requests (Stop, TriggerGossip).
    public init(socketPath: String, timeout: Duration) {
        self.endpoint = Endpoint(host: "localhost", port: 0)
        self.socketPath = socketPath
        self.timeout = timeout
        self.client = RPCClient()
    }

    deinit { client.close() }

    /// What error messages call the node: its endpoint, or its control socket.
    public var target: String { socketPath.map { "control socket \($0)" } ?? endpoint.description }

    func call(_ type: MessageType, _ payload: ByteSlice, timeout: Duration? = nil) throws(ControlFailure) -> InboundMessage {
        if let path = socketPath {
            // A fresh connection per request: the pool would redial `endpoint`, a stand-in.
            do throws(RPCError) {
                client.adopt(socket: try UnixSocket.connect(path: path), as: endpoint, secure: false)
            } catch {
                throw ControlFailure(exitCode: .unreachable, message: "\(error.message)", status: error.code)
            }
        }
        switch callSync(client, endpoint, type, payload, deadline: timeout ?? self.timeout) {
        case .success(let m): return m
        case .failure(let e):
            if e.remote {
                throw ControlFailure(exitCode: .remoteError, message: "\(target) answered \(e.code.name): \(e.message)", status: e.code)
            }
            switch e.code {
            case .unavailable, .deadlineExceeded:
                throw ControlFailure(exitCode: .unreachable,
                                     message: "\(target): \(e.code.name): \(e.message)",
                                     status: e.code)
            default:
                throw ControlFailure(exitCode: .failure, message: "\(target): \(e.code.name): \(e.message)", status: e.code)
            }
        }
    }

    /// The node's status.
    public func status() throws(ControlFailure) -> StatusReport {
        let m = try call(.status, ByteSlice(ByteStorage(count: 0)))
        do {
            return try StatusReport.parse(try WireCodec.decodeStatusReply(m.payload).json)
        } catch {
            throw ControlFailure(exitCode: .failure, message: "\(target) sent a status this gossipctl cannot read: \(error)", status: nil)
        }
    }

    /// Exports the node's current model to a safetensors file; returns a summary object.
    public func exportModel(to path: String) throws(ControlFailure) -> [String: Any] {
        let st = try status()
        let m = try call(.getModel, try! WireCodec.encode(GetModelRequest(schemaHash: 0)))
        let decoded: (MLPArchitecture, ParameterSet, ModelState)
        do {
            decoded = try WireCodec.decodeModel(m.payload, expected: nil)
        } catch {
            throw ControlFailure(exitCode: .failure, message: "\(target) sent a model this gossipctl cannot read: \(error)", status: nil)
        }
        let (arch, params, model) = decoded
        var meta = st.preprocessing
        meta["arch"] = arch.description
        meta["activation"] = "relu"
        if !st.dataset.isEmpty { meta["dataset"] = st.dataset }
        meta["round"] = "\(model.round)"
        meta["step"] = "\(model.step)"
        meta["samples_seen"] = "\(model.samples)"
        let source = socketPath == nil ? endpoint.description : st.endpoint
        meta["source"] = source
        if let a = st.accuracy { meta["reported_accuracy"] = "\(a)" }
        do {
            try SafeTensors.write(params, metadata: meta, to: path)
        } catch {
            throw ControlFailure(exitCode: .cannotWrite, message: "cannot write \(path): \(error)", status: nil)
        }
        var summary: [String: Any] = ["path": path, "architecture": arch.description,
                                      "schema_hash": StatusReport.hex(params.schemaHash),
                                      "parameters": params.parameterCount, "round": Int(model.round),
                                      "source": source]
        if let a = st.accuracy { summary["reported_accuracy"] = a }
        return summary
    }

    /// Triggers one exchange now with `peer` ("" = a random known peer); returns the node's report of it.
    public func gossip(with peer: String) throws(ControlFailure) -> TriggerGossipResult {
        let request: ByteSlice
        do {
            request = try WireCodec.encode(TriggerGossipRequest(peer: peer))
        } catch {
            throw ControlFailure(exitCode: .usage, message: "--with '\(peer)': \(error)", status: nil)
        }
        let m = try call(.triggerGossip, request)
        do {
            return try WireCodec.decodeTriggerGossipReply(m.payload)
        } catch {
            throw ControlFailure(exitCode: .failure, message: "unreadable gossip reply: \(error)", status: nil)
        }
    }

    /// Blocks until the node has finished training (SPEC §5.8), at most `timeout`.
    /// - Throws: `ControlFailure` with `.notConverged` (3) when the node answered
    ///   DEADLINE_EXCEEDED (not finished in time), `.unreachable` (69) when it could not be
    ///   reached, stopped before it finished, or did not answer at all.
    public func waitConverged(timeout: Duration) throws(ControlFailure) -> WaitConvergedResult {
        let ms = max(1, min(Double(WaitConvergedRequest.maxTimeoutMs), timeout.milliseconds.rounded(.up)))
        let payload = WireCodec.encode(WaitConvergedRequest(timeoutMs: UInt32(ms)))
        let m: InboundMessage
        do {
            // The node answers by `timeout`; the RPC deadline leaves it 2 s to do so.
            m = try call(.waitConverged, payload, timeout: timeout + .seconds(2))
        } catch {
            if error.exitCode == .remoteError, error.status == .deadlineExceeded {
                throw ControlFailure(exitCode: .notConverged, message: "\(target) has not finished training within the timeout: \(error.message)", status: .deadlineExceeded)
            }
            if error.exitCode == .remoteError, error.status == .unavailable {
                throw ControlFailure(exitCode: .unreachable, message: error.message, status: .unavailable)
            }
            throw error
        }
        do {
            return try WireCodec.decodeWaitConvergedReply(m.payload)
        } catch {
            throw ControlFailure(exitCode: .failure, message: "unreadable WaitConverged reply: \(error)", status: nil)
        }
    }

    /// Asks the node to stop gracefully (it checkpoints first).
    public func stop() throws(ControlFailure) {
        _ = try call(.stop, ByteSlice(ByteStorage(count: 0)))
    }

    // MARK: - text rendering

    /// `gossipctl peers` as text: one line per peer, its endpoint and the identity it proved
    /// to the node ("-" when not known).
    public static func peersText(_ s: StatusReport) -> String {
        s.peers.map { p in "\(p)  \((s.peerIdentities[p] ?? nil) ?? "-")" }.joined(separator: "\n")
    }

    /// `gossipctl peers -o json`: `{"endpoint":..., "identity":..., "peers":[...], "peer_identities":{...}}`.
    public static func peersJSON(_ s: StatusReport) -> String {
        var ids: [String: Any] = [:]
        for p in s.peers { ids[p] = (s.peerIdentities[p] ?? nil).map { $0 as Any } ?? NSNull() }
        return jsonText(["endpoint": s.endpoint, "identity": s.identity.map { $0 as Any } ?? NSNull(),
                         "peers": s.peers, "peer_identities": ids])
    }

    public static func text(_ s: StatusReport) -> String {
        func pct(_ v: Double?) -> String { v.map { String(format: "%.2f%%", $0 * 100) } ?? "-" }
        func num(_ v: Double?) -> String { v.map { String(format: "%.4f", $0) } ?? "-" }
        func mb(_ n: Int) -> String { String(format: "%.1f MB", Double(n) / 1e6) }
        var lines = [
            "role        \(s.role)",
            "endpoint    \(s.endpoint)",
            "phase       \(s.phase)",
            "model       \(s.architecture.isEmpty ? "-" : s.architecture)  schema \(s.schemaHash)",
        ]
        if let id = s.identity {
            let channel = s.secure.map { $0 ? "  encrypted (Noise_XXpsk3_25519_AESGCM_SHA256)" : "  plaintext (no network key)" } ?? ""
            lines.insert("identity    \(id)\(channel)", at: 2)
        }
        if s.role == "peer" {
            lines += [
                "dataset     \(s.dataset)  shard \(s.shard) (\(s.shardSize) rows)",
                "progress    round \(s.round)  step \(s.step)  samples \(s.samplesSeen)",
                "loss        \(num(s.loss)) (train, last round)",
                "accuracy    \(pct(s.accuracy)) on \(s.heldOutCount) held-out rows (loss \(num(s.heldOutLoss)))",
                "exchanges   done \(s.exchanges.done)  failed \(s.exchanges.failed)  busy \(s.exchanges.busy)  refused \(s.exchanges.refused)",
                "rejected    weight capped \(s.rejected.weightCapped)  models \(s.rejected.modelsRejected)"
                    + (s.rejected.boundResets == 0 ? "" : "  bound resets \(s.rejected.boundResets)")
                    + (s.rejected.byPeer.isEmpty ? "" : "  by peer: " + s.rejected.byPeer.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")),
            ]
            if let c = s.convergence, c.enabled {
                let state = c.finished ? "finished" : (c.converged ? "converged, voted done" : "training")
                lines.append("convergence \(state)  votes \(c.votesCounted)/\(c.votesNeeded)  lr \(String(format: "%g", c.learningRate))"
                             + "  loss improvement \(num(c.lossImprovement))  distance \(num(c.distance))"
                             + (c.finalModel.map { "  final model \($0)" } ?? ""))
            }
            if let r = s.checkpointRound { lines.append("checkpoint  round \(r)") }
            if let r = s.resumedFromRound { lines.append("resumed     from round \(r)") }
        }
        lines.append("traffic     in \(mb(s.bytesIn))  out \(mb(s.bytesOut))")
        lines.append("peers       \(s.peers.count)\(s.peers.isEmpty ? "" : ": " + s.peers.joined(separator: " "))")
        lines.append(String(format: "uptime      %.1f s", s.uptimeSeconds))
        return lines.joined(separator: "\n")
    }
}
