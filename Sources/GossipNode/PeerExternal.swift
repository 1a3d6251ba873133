// External trainers (SPEC §5.12): `gossipd peer --trainer external` holds the model and its
// averaging weight and gossips like a training peer, while another program on the same
// machine trains: it pulls the model (ModelPull), trains k steps, and pushes the result
// (ModelPush). A push applies `pushed - pulled(version)` to the node's CURRENT model, so the
// averaging done while the program trained is kept.
//
// Ownership: `PeerNode.external` (a `Mutex`) holds `ExternalVersions`; it is taken inside
// `core`'s lock when both are needed (order: core, then external), never the other way.
// The model itself is written under `core`'s lock while no exchange holds the slot
// (`PeerState.mayTrain`), as a training step is.
import Foundation
import GossipML
import GossipNet
import GossipWire
import Logging
import Synchronization

/// Which program trains a peer's model.
public enum TrainerKind: String, Sendable, CaseIterable {
    /// The node's own Swift trainer (the MLP on its dataset shard).
    case swift
    /// Another program on the same machine, through ModelPull/ModelPush (SPEC §5.12).
    case external
}

/// The model versions an external peer handed out, and its pull/push accounting. A pure
/// value: no locks, no I/O (the node holds it behind `PeerNode.external`).
///
/// A version names the model's weights at a pull. Pulling twice without a change in between
/// gives the same version; any change (an exchange, a push-sum merge, a push, a restore)
/// gives a new one at the next pull. The last `keep` versions' weights are kept (so memory is
/// at most `keep` copies of the model): a push may start from any of them.
struct ExternalVersions: Sendable {
    /// Versions whose weights are kept (the oldest is dropped past it).
    static let keep = 4

    /// The last version handed out. Versions start at a random point per process, so a push
    /// based on a pull from before a restart names a version this process never had.
    private(set) var latest: UInt64
    private var kept: [(version: UInt64, weights: [Float])] = []
    var report = StatusReport.External()
    /// The trainer pulled the final model (phase `done`, SPEC §5.12): the node may exit.
    var finalPulled = false

    init(seed: UInt64 = UInt64.random(in: 1...(1 << 40))) {
        latest = seed << 16
    }

    /// The version of `weights` (the model now): the newest kept one when they are equal,
    /// else a new version, kept. Copy-on-write: keeping `weights` costs a copy only once the
    /// model changes.
    mutating func version(of weights: [Float]) -> UInt64 {
        if let last = kept.last, last.weights == weights { return last.version }
        latest += 1
        kept.append((latest, weights))
        if kept.count > ExternalVersions.keep { kept.removeFirst(kept.count - ExternalVersions.keep) }
        report.version = latest
        return latest
    }

    /// The weights of a kept version, or nil when it is unknown or too old.
    func weights(of version: UInt64) -> [Float]? {
        kept.last(where: { $0.version == version })?.weights
    }

    /// The kept versions, oldest first (for error texts).
    var keptVersions: [UInt64] { kept.map(\.version) }

    /// `current + (pushed - base)` element-wise into a new array; nil when a result is not finite.
    /// Precondition: the three have the same count.
    static func apply(current: [Float], pushed: [Float], base: [Float]) -> [Float]? {
        precondition(current.count == pushed.count && pushed.count == base.count, "ExternalVersions.apply: sizes differ")
        var out = [Float](repeating: 0, count: current.count)
        var finite = true
        out.withUnsafeMutableBufferPointer { o in
            current.withUnsafeBufferPointer { c in
                pushed.withUnsafeBufferPointer { p in
                    base.withUnsafeBufferPointer { b in
                        for i in 0..<o.count { o[i] = c[i] + (p[i] - b[i]) }
                    }
                }
            }
            finite = ParameterSet.allFinite(UnsafeBufferPointer(o))
        }
        return finite ? out : nil
    }
}

extension PeerNode {
    var isExternal: Bool { config.trainer == .external }

    /// This node's averaging weight in an exchange and its push-sum rows: the shard's rows for
    /// a Swift trainer; for an external one the samples of its latest push (1 before it).
    var ownRows: Double {
        isExternal ? external.withLock { $0.report.weight } : Double(shard.count)
    }

    /// The empty data an external peer holds instead of a dataset.
    static func externalSplit() throws -> DatasetSplit {
        let none = try Dataset(name: "external", features: [], labels: [], featureCount: 1, classCount: 1)
        return DatasetSplit(train: none, test: none, preprocessing: [:])
    }

    func registerExternalHandlers() {
        registerGuarded(server, .modelPull, rights: config.security.rights, logger: logger) { [weak self] msg, responder in
            self?.handleModelPull(msg, responder)
        }
        registerGuarded(server, .modelPush, rights: config.security.rights, logger: logger) { [weak self] msg, responder in
            self?.handleModelPush(msg, responder)
        }
    }

    /// The loop of an external peer: no training here, only averaging (and triggered
    /// exchanges, checkpoints), until stopped, or, without --rounds and --no-converge, until
    /// the network ends (SPEC §5.12: it votes once another peer voted, spreads the votes, and
    /// ends as §5.9 says).
    func externalLoop() {
        var ticks = 0
        while !isStopping {
            sleep(for: config.averagingInterval)   // serves triggered exchanges meanwhile
            if isStopping { break }
            if convergenceEnabled {
                followTheNetworksVotes()
                if convergenceEnds() { break }
            }
            serviceTrigger()
            averagingStep()
            if convergenceEnabled { spreadVotes() }
            ticks += 1
            reportMembership()
            if checkpoints != nil, ticks % 50 == 0 { checkpointLogged() }
        }
    }

    /// An external peer's vote (SPEC §5.12): it judges nothing itself (the loss is its
    /// trainer's), so it votes as soon as another peer that is a member has voted: it never
    /// holds up the end that the network's own trainers judge, and a network of external peers
    /// alone runs until stopped (a departed voter, or a name a Votes message merely lists,
    /// does not count).
    func followTheNetworksVotes() {
        let me = endpoint.description
        let voted: Bool = core.withLock { c in
            let votes = c.state.convergence.votes
            let members = Set(c.state.membership.endpoints)
            guard !votes.voters.contains(me), votes.voters.contains(where: { $0 != me && members.contains($0) }) else { return false }
            c.state.convergence.votes.merge([me])
            return true
        }
        if voted {
            logger.notice("another peer voted that training is done: this external peer votes too (its trainer's loss is not judged here)",
                          metadata: ["voters": "\(core.withLock { $0.state.convergence.votes.voters.count })"])
        }
    }

    /// A path the node reads or writes for a trainer: absolute (the node's working directory
    /// is not the trainer's), no NUL.
    private func checkedPath(_ path: String) throws -> String {
        guard path.hasPrefix("/"), !path.contains("\0") else {
            throw RPCError(.invalidArgument, "path '\(path)' is not absolute; give the full path of the file (the node's working directory is not the trainer's)")
        }
        return path
    }

    func handleModelPull(_ msg: InboundMessage, _ responder: RPCResponder) {
        do {
            guard isExternal else {
                throw RPCError(.failedPrecondition, "this peer trains with its own Swift trainer; ModelPull/ModelPush are served by peers started with --trainer external")
            }
            let req = try ModelPullRequest.decode(msg.payload, limits: WireCodec.limits)
            let path = try req.path.isEmpty ? "" : checkedPath(req.path)
            let (arch, params, round, step, samples, version, meta, isFinal) = try core.withLock { c in
                guard c.state.hasModel, let t = model.trainer, let arch = model.architecture else {
                    throw RPCError(.unavailable, "peer is still onboarding and has no model yet; pull again shortly")
                }
                let p = t.parameters
                let v = external.withLock { e in
                    let v = e.version(of: p.storage)
                    e.report.pulls += 1
                    return v
                }
                var meta = modelMetadata(arch, c.state)
                meta["version"] = "\(v)"
                return (arch, p, UInt64(c.state.round), UInt64(model.step), UInt64(model.samples), v, meta,
                        c.state.convergence.finished)
            }
            if path.isEmpty {
                let t = WireCodec.table(params)
                let payload = try params.storage.withUnsafeBytes { (d) throws(WireError) in
                    try ModelPullReply.encodeInline(version: version, architecture: arch.description, round: round, step: step,
                                                    samples: samples, table: t, data: d, limits: WireCodec.limits)
                }
                responder.reply(payload, options: RPCOptions(compression: .none, checksum: false))
            } else {
                // The node writes the file itself (same machine): nothing is copied through the socket.
                do {
                    try SafeTensors.write(params, metadata: meta, to: path)
                } catch {
                    throw RPCError(.failedPrecondition, "cannot write \(path): \(error)")
                }
                let size = (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? NSNumber)?.uint64Value ?? 0
                let reply = ModelPullReply(version: version, body: .file(byteCount: size))
                responder.reply { try reply.encode(limits: WireCodec.limits) }
            }
            if isFinal {   // the trainer has the final model: the node may exit (SPEC §5.12)
                external.withLock { $0.finalPulled = true }
                wake.signal()
            }
        } catch {
            responder.fail(for: error)
        }
    }

    /// Refuses a push: counted, logged, answered with the error's status.
    private func refusePush(_ error: Error, _ responder: RPCResponder) {
        external.withLock { $0.report.pushesRefused += 1 }
        logger.warning("push refused", metadata: ["error": "\(statusAndText(error).1)"])
        responder.fail(for: error)
    }

    func handleModelPush(_ msg: InboundMessage, _ responder: RPCResponder) {
        do {
            guard isExternal else {
                throw RPCError(.failedPrecondition, "this peer trains with its own Swift trainer; ModelPull/ModelPush are served by peers started with --trainer external")
            }
            guard let (hash, specs) = core.withLock({ c -> (UInt64, [TensorSpec])? in
                guard c.state.hasModel, let t = model.trainer else { return nil }
                return (t.parameters.schemaHash, t.parameters.specs)
            }) else {
                throw RPCError(.unavailable, "peer is still onboarding and has no model yet; pull first")
            }
            // No schema check by hash here: a trainer's writer may order the tensors otherwise
            // (the hash covers the order); they are matched by name and shape below.
            _ = hash
            let req = try ModelPushRequest.decode(msg.payload, limits: WireCodec.limits, expectedSchemaHash: nil)
            guard req.samples <= 1 << 40, req.steps <= 1 << 40 else {
                throw RPCError(.invalidArgument, "samples \(req.samples) / steps \(req.steps) are implausible (more than 2^40); send the samples trained since the pull")
            }
            // Everything is validated before the model is touched.
            let pushed: [Float]
            if let m = req.model {
                let tensors = m.table.tensors.enumerated().map { i, t in
                    PushedTensor(name: t.name, shape: t.shape) { dst in
                        // The shape was checked against the table (so the counts agree) before
                        // this runs; the table is F32 only (ModelPush carries no lossy dtype).
                        m.tensorData(i).withUnsafeBytes { raw in copyLittleEndianFloats(raw, into: dst) }
                    }
                }
                pushed = try matchPushed(tensors, specs: specs, source: "the pushed model")
            } else {
                let path = try checkedPath(req.path)
                let file: ParameterSet
                do {
                    file = try SafeTensors.read(path: path).parameters
                } catch {
                    throw RPCError(.invalidArgument, "cannot read \(path) as safetensors: \(error)")
                }
                let tensors = file.specs.map { f in
                    PushedTensor(name: f.name, shape: f.shape) { dst in
                        // SafeTensors.read already turned the file's F32 little-endian bytes
                        // into host floats: one contiguous copy.
                        file.storage.withUnsafeBufferPointer { src in
                            guard !dst.isEmpty else { return }
                            dst.baseAddress!.update(from: src.baseAddress! + f.offset, count: dst.count)
                        }
                    }
                }
                pushed = try matchPushed(tensors, specs: specs, source: path)
            }
            let deadline = ContinuousClock.now + config.exchangeTimeout
            while true {
                let now = ContinuousClock.now
                let outcome: Result<(UInt64, Double), RPCError>? = core.withLock { c in
                    guard c.state.hasModel, !c.state.stopRequested, let t = model.trainer else {
                        return .failure(RPCError(.unavailable, "this peer is stopping"))
                    }
                    // The network has converged (SPEC §5.9, §5.12): the trainer ends. Until the
                    // final model is written (the final averaging steps, an exchange finishing)
                    // the push waits, so that the trainer's next pull gets the final model.
                    if c.state.convergence.finished {
                        return .failure(RPCError(.outOfRange, "training has ended: the network converged; this peer holds its final model\(c.state.convergence.finalModelPath.map { " (\($0))" } ?? ""): pull it and stop the trainer"))
                    }
                    if c.state.phase == .final || c.state.phase == .done {
                        if now < deadline { return nil }
                        return .failure(RPCError(.aborted, "the network's final averaging steps are still running (its training has ended): push again, and the answer will be OUT_OF_RANGE once the final model is written"))
                    }
                    guard c.state.mayTrain else { return nil }   // an exchange holds the model: wait
                    return external.withLock { e in
                        guard let base = e.weights(of: req.baseVersion) else {
                            return .failure(RPCError(.failedPrecondition, "version \(req.baseVersion) is unknown or too old: this node keeps the weights of its last \(ExternalVersions.keep) pulls (versions \(e.keptVersions.map(String.init).joined(separator: ", "))); pull again and push what you trained from that pull"))
                        }
                        let before = t.parameters.storage
                        guard let after = ExternalVersions.apply(current: before, pushed: pushed, base: base) else {
                            return .failure(RPCError(.invalidArgument, "applying the push would give NaN or Inf weights; nothing changed"))
                        }
                        let change = before.withUnsafeBufferPointer { b in
                            after.withUnsafeBufferPointer { a in Averaging.relativeL2Distance(b, a) }
                        }
                        t.withParameters { p in p.storage = after }
                        t.recordExternal(steps: Int(req.steps), samples: Int(req.samples))
                        e.report.pushes += 1
                        e.report.weight = Double(max(1, req.samples))
                        c.pushSum?.trainerSamples(e.report.weight)
                        let v = e.version(of: after)
                        if change.isFinite { c.state.ownModelMoved(by: change) }
                        _ = c.state.completeExternalRound()
                        return .success((v, change.isFinite ? change : 0))
                    }
                }
                switch outcome {
                case .success(let (v, change))?:
                    logger.debug("push applied", metadata: ["version": "\(v)", "samples": "\(req.samples)", "change": "\(change)"])
                    responder.reply { try ModelPushReply(version: v, relativeL2Change: change).encode(limits: WireCodec.limits) }
                    return
                case .failure(let e)?:
                    throw e
                case nil:
                    if now > deadline {
                        throw RPCError(.aborted, "an exchange held the model for longer than \(config.exchangeTimeout); push again")
                    }
                    Thread.sleep(forTimeInterval: 0.002)
                }
            }
        } catch {
            refusePush(error, responder)
        }
    }

    /// The pushed weights in this model's table order, matched by name (a trainer's writer
    /// may order the tensors otherwise).
    /// - Throws: FAILED_PRECONDITION for another table, INVALID_ARGUMENT for non-finite weights.
    private func matchPushed(_ tensors: [PushedTensor], specs: [TensorSpec], source: String) throws -> [Float] {
        guard tensors.count == specs.count else {
            throw RPCError(.failedPrecondition, "\(source) has \(tensors.count) tensors, this network's model \(specs.count); push weights of the model you pulled")
        }
        let byName = Dictionary(tensors.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        var out = [Float](repeating: 0, count: specs.last.map { $0.offset + $0.count } ?? 0)
        try out.withUnsafeMutableBufferPointer { o in
            for s in specs {
                guard let f = byName[s.name] else {
                    throw RPCError(.failedPrecondition, "\(source) has no tensor '\(s.name)'; push weights of the model you pulled")
                }
                guard f.shape == s.shape else {
                    throw RPCError(.failedPrecondition, "tensor '\(s.name)' in \(source) has shape \(f.shape), this network's \(s.shape)")
                }
                try f.copy(UnsafeMutableBufferPointer(rebasing: o[s.range]))
            }
        }
        guard out.withUnsafeBufferPointer({ ParameterSet.allFinite($0) }) else {
            throw RPCError(.invalidArgument, "\(source) holds NaN or Inf weights; nothing changed")
        }
        return out
    }
}

/// Copies float32 little-endian wire bytes into `dst` (at most the smaller of the two
/// counts): one memcpy on a little-endian host (the bytes need not be 4-byte aligned), a
/// byte-order conversion per value elsewhere.
private func copyLittleEndianFloats(_ raw: UnsafeRawBufferPointer, into dst: UnsafeMutableBufferPointer<Float>) {
    let n = min(raw.count / 4, dst.count)
    guard n > 0 else { return }
    #if _endian(little)
    UnsafeMutableRawPointer(dst.baseAddress!).copyMemory(from: raw.baseAddress!, byteCount: n * 4)
    #else
    for k in 0..<n {
        dst[k] = Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: 4 * k, as: UInt32.self)))
    }
    #endif
}

/// One tensor of a push, before it is matched to the model's table.
private struct PushedTensor {
    var name: String
    var shape: [Int]
    /// Copies the values into a buffer of exactly the tensor's element count.
    var copy: (UnsafeMutableBufferPointer<Float>) throws -> Void
}

