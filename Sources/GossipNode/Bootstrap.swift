// The bootstrap role: an ephemeral discovery service. It registers peers, hands out the peer
// list and the initial (untrained) model, and forgets peers that stop answering its pings.
// It holds no training state: the network trains on when it dies.
import Foundation
import GossipML
import GossipNet
import GossipWire
import Logging
import Synchronization

/// The bootstrap node. `@unchecked Sendable`: mutable state lives in `state` (a `Mutex`);
/// `pinger` is set once by `start()` and cancelled by `wait()`, both on the owner's thread.
public final class BootstrapNode: @unchecked Sendable {
    public let config: BootstrapConfig
    let logger: Logger
    let server: RPCServer
    let client: RPCClient
    /// The `verifyPeer` callback of `client` (pinning).
    let verifier: PeerVerifier
    let started = ContinuousClock.now
    private let initialPayload: ByteSlice
    private let metricsURLBox = Mutex<String?>(nil)
    /// Where this node serves its Prometheus metrics (set by `gossipd --metrics-listen`);
    /// reported in status as `metrics`.
    public var metricsURL: String? {
        get { metricsURLBox.withLock { $0 } }
        set { metricsURLBox.withLock { $0 = newValue } }
    }
    private struct State {
        var membership: Membership
        var stopping = false
        var endpoint: Endpoint
    }
    private let state: Mutex<State>
    /// Wakes `wait()` when a stop is requested.
    private let stopped = DispatchSemaphore(value: 0)
    private var pinger: DispatchSourceTimer?

    public init(config: BootstrapConfig, logger: Logger) throws {
        guard config.architecture.matches(config.initialModel) else {
            throw NodeError("the initial model does not match architecture \(config.architecture)")
        }
        guard config.initialModel.allFinite else { throw NodeError("the initial model holds NaN or Inf weights") }
        self.config = config
        self.logger = logger
        var serverConfig = ServerConfig()
        serverConfig.security = config.security.channel
        serverConfig.apply(config.admission)
        // Connections the channel refused (failed handshake, plaintext client, a record that
        // failed authentication) are logged with their reason (SPEC §13.6).
        serverConfig.securityLog = { [logger] line in logger.warning("\(line)") }
        self.server = RPCServer(config: serverConfig)
        let verifier = PeerVerifier()
        self.client = verifier.makeClient(config.security)
        self.verifier = verifier
        self.state = Mutex(State(membership: Membership(selfEndpoint: "", dropAfter: config.dropAfter), endpoint: config.listen))
        self.initialPayload = try WireCodec.encodeModel(architecture: config.architecture, params: config.initialModel,
                                                    round: 0, step: 0, samples: 0)
        // Model messages and the process's receive budget follow the model (issue 8, defect 1).
        server.fitModel(payloadBytes: initialPayload.count)
        // Not `self?.verifyPeer(...) ?? refusal`: nil from verifyPeer means "accept".
        verifier.set { [weak self] ep, key in
            guard let self else { return "this bootstrap is shutting down" }
            return self.verifyPeer(ep, key)
        }
    }

    /// Checks the identity a peer proved when this node dialed it (pinning, see Membership).
    func verifyPeer(_ ep: Endpoint, _ key: [UInt8]) -> String? {
        let verdict = state.withLock { $0.membership.verify(endpoint: ep.description, proven: key) }
        return logPinVerdict(verdict, ep, key, logger: logger)
    }

    /// Starts serving; prints `listening HOST:PORT` and writes the ready file.
    public func start() throws -> Endpoint {
        let hash = config.initialModel.schemaHash
        server.register(.register) { [weak self] msg, responder in
            guard let self else { return }
            do {
                let req = try WireCodec.decodeRegisterRequest(msg.payload)
                if req.schemaHash != 0, req.schemaHash != hash {
                    responder.fail(.failedPrecondition, "peer model schema \(StatusReport.hex(req.schemaHash)) differs from this network's \(StatusReport.hex(hash))")
                    return
                }
                guard (try? Endpoint(parsing: req.endpoint)) != nil else {
                    responder.fail(.invalidArgument, "'\(req.endpoint)' is not HOST:PORT")
                    return
                }
                let peers: [PeerEntry] = self.state.withLock { s in
                    s.membership.markSuccess(req.endpoint)
                    return s.membership.entries(s.membership.replyPeers(for: req.endpoint, limit: WireCodec.limits.maxPeers),
                                                selfIdentity: nil)
                }
                self.logger.info("peer registered", metadata: ["peer": "\(req.endpoint)", "peers": "\(peers.count + 1)"])
                responder.reply {
                    try WireCodec.encode(RegisterReply(peers: WirePeers.list(peers),
                                                       architecture: self.config.architecture.description, schemaHash: hash))
                }
            } catch let e as WireError {
                responder.fail(e.statusCode, e.description)
            } catch {
                responder.fail(.invalidArgument, "\(error)")
            }
        }
        server.register(.getModel) { [weak self] msg, responder in
            guard let self else { return }
            do {
                let req = try WireCodec.decodeGetModelRequest(msg.payload)
                if req.schemaHash != 0, req.schemaHash != hash {
                    responder.fail(.failedPrecondition, "requested schema \(StatusReport.hex(req.schemaHash)) but this network's is \(StatusReport.hex(hash))")
                    return
                }
                responder.reply(self.initialPayload, options: RPCOptions(compression: .none, checksum: false))
            } catch let e as WireError {
                responder.fail(e.statusCode, e.description)
            } catch {
                responder.fail(.invalidArgument, "\(error)")
            }
        }
        // A bootstrap holds no training state (SPEC §4.1): it takes part in no exchange.
        // TriggerGossip is a control request on every node: the control rule answers first.
        server.register(.gossipExchange) { _, responder in
            responder.fail(.unimplemented, "this node is a bootstrap and holds no training model: send GossipExchange to a peer (Register's reply lists them)")
        }
        server.register(.reserve) { _, responder in
            responder.fail(.unimplemented, "this node is a bootstrap and holds no training model: send Reserve to a peer (Register's reply lists them)")
        }
        registerGuarded(server, .triggerGossip, rights: config.security.rights, logger: logger) { _, responder in
            responder.fail(.unimplemented, "this node is a bootstrap and holds no training model: send TriggerGossip to a peer (Register's reply lists them)")
        }
        // Nor does it train: no votes, no end of training (SPEC §5.7, §5.8).
        for type in [MessageType.votes, .waitConverged] {
            server.register(type) { _, responder in
                responder.fail(.unimplemented, "this node is a bootstrap and does not train: send \(type.name) to a peer (Register's reply lists them)")
            }
        }
        registerCommonHandlers(server, logger: logger, rights: config.security.rights, status: { [weak self] in self?.status() },
                               stop: { [weak self] in self?.requestStop() })
        // The listen rule again (gossipd applied it with its notice): secure by default for
        // library users too.
        _ = try ListenPolicy.check(listen: config.listen, secure: config.security.isSecure, insecure: config.security.insecure)
        if let path = config.security.controlSocket { try ControlSocketFile.prepare(path) }
        let bound = try server.start(host: config.listen.host, port: config.listen.port)
        if let path = config.security.controlSocket {
            do throws(RPCError) { try server.startControl(path: path) } catch {
                server.shutdown(grace: .zero)   // do not leave the TCP listener serving
                throw NodeError("cannot serve the control socket \(path): \(error.message)")
            }
            logger.info("control socket", metadata: ["path": "\(path)"])
        }
        let advertised = config.advertise ?? bound
        warnIfUnreachable(advertised, logger: logger)
        state.withLock { $0.endpoint = advertised }
        emitLine("listening \(advertised)")
        logger.info("bootstrap serving", metadata: ["endpoint": "\(advertised)", "arch": "\(config.architecture)",
                                                    "schema": "\(StatusReport.hex(hash))",
                                                    "identity": "\(config.security.identity.publicKeyHex)",
                                                    "secure": "\(config.security.isSecure)"])
        startPinger()
        if let f = config.readyFile { try writeReadyFile(f, advertised.description) }
        return advertised
    }

    /// Pings every registered peer each interval and forgets those that stop answering.
    private func startPinger() {
        let timer = DispatchSource.makeTimerSource(queue: DispatchQueue(label: "gossip.bootstrap.ping"))
        let interval = config.pingInterval.seconds
        timer.schedule(deadline: .now() + interval, repeating: interval)
        timer.setEventHandler { [weak self] in
            guard let self else { return }
            for peer in self.state.withLock({ $0.membership.endpoints }) {
                guard let ep = try? Endpoint(parsing: peer) else { continue }
                self.client.call(ep, type: .ping, payload: ByteSlice(ByteStorage(count: 0)),
                                 options: RPCOptions(), deadline: .seconds(max(1, interval))) { result in
                    let forgotten: Bool = self.state.withLock { s in
                        switch result {
                        case .success:
                            s.membership.markSuccess(peer)
                            return false
                        case .failure:
                            return s.membership.markFailure(peer)
                        }
                    }
                    if forgotten, case .failure(let err) = result {
                        self.logger.notice("peer forgotten", metadata: ["peer": "\(peer)", "after": "\(err.code.name)"])
                    }
                }
            }
        }
        timer.resume()
        pinger = timer
    }

    /// Blocks until stopped (Stop request or `requestStop`), then shuts down.
    public func wait() {
        while !state.withLock({ $0.stopping }) { stopped.wait() }
        pinger?.cancel()
        let done = DispatchSemaphore(value: 0)
        server.shutdown(grace: .seconds(1)) { done.signal() }
        _ = done.wait(timeout: .now() + 3)
        if let path = config.security.controlSocket { ControlSocketFile.remove(path) }
        client.close()
        logger.info("bootstrap stopped")
    }

    public func requestStop() {
        let first = state.withLock { s -> Bool in
            defer { s.stopping = true }
            return !s.stopping
        }
        if first { stopped.signal() }
    }

    public func status() -> StatusReport {
        let stats = server.stats
        let metrics = metricsURL
        return state.withLock { st in
            var s = StatusReport(role: "bootstrap", endpoint: st.endpoint.description, phase: st.stopping ? "stopping" : "serving",
                                 architecture: config.architecture.description, schemaHash: config.initialModel.schemaHash)
            s.peers = st.membership.endpoints
            s.identity = config.security.identity.publicKeyHex
            s.secure = config.security.isSecure
            s.peerIdentities = StatusReport.identities(of: st.membership)
            s.bytesIn = stats.bytesIn
            s.bytesOut = stats.bytesOut
            s.uptimeSeconds = (ContinuousClock.now - started).seconds
            s.metrics = metrics
            return s
        }
    }
}
