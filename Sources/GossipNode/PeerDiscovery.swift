// The peer's side of LAN discovery (Discovery.swift, SPEC §5.11): what it announces, and how
// announced candidates become members: one Register at a time, over TCP (the secure channel
// with a network key), and only a successful reply adds anything to the membership.
import Dispatch
import Foundation
import GossipNet
import GossipWire
import Logging
import Synchronization

/// The discovery of one peer and its queue of candidates to contact. `@unchecked Sendable`:
/// mutable state is behind `state`.
final class PeerDiscovery: @unchecked Sendable {
    /// Candidates waiting for a contact, at most; more are dropped (they announce again).
    static let maxPending = 32
    /// A candidate whose contact failed is not tried again for this long.
    static let cooldown: Duration = .seconds(10)
    /// Another network on the same group (schema mismatch): not tried again for this long.
    static let foreignCooldown: Duration = .seconds(120)

    private struct State {
        var service: DiscoveryService?
        var pending: [String] = []
        var contacting = false
        var notBefore: [String: ContinuousClock.Instant] = [:]
    }
    private let state = Mutex(State())

    var service: DiscoveryService? { state.withLock { $0.service } }
    var counters: DiscoveryCounters? { service?.counters }

    func set(_ s: DiscoveryService) { state.withLock { $0.service = s } }

    func stop() { state.withLock { s in defer { s.service = nil }; return s.service }?.stop() }

    /// Queues `endpoint` for a contact unless it is waiting, cooling down, or the queue is full.
    /// - Returns: true when the caller should start the pump.
    func enqueue(_ endpoint: String, now: ContinuousClock.Instant = .now) -> Bool {
        state.withLock { s in
            if let t = s.notBefore[endpoint], now < t { return false }
            guard !s.pending.contains(endpoint), s.pending.count < PeerDiscovery.maxPending else { return false }
            s.pending.append(endpoint)
            if s.contacting { return false }
            s.contacting = true
            return true
        }
    }

    /// The next candidate to contact, or nil (the pump then stops).
    func next() -> String? {
        state.withLock { s in
            guard !s.pending.isEmpty else { s.contacting = false; return nil }
            return s.pending.removeFirst()
        }
    }

    func coolDown(_ endpoint: String, for d: Duration) {
        state.withLock { s in
            if s.notBefore.count >= 1024 { s.notBefore.removeAll(keepingCapacity: true) }
            s.notBefore[endpoint] = .now + d
        }
    }
}

extension PeerNode {
    /// Starts announcing and listening when `config.discovery` is set (after the listener is
    /// bound, so the announcement names the real port).
    func startDiscovery() throws {
        guard let dc = config.discovery else { return }
        if config.security.isSecure && dc.sealing == nil {
            throw NodeError("--discover on a network with a key needs sealed announcements (DiscoveryConfig.sealing); plain ones are allowed only where plaintext TCP is")
        }
        let service = try DiscoveryService(
            config: dc, interface: config.listen.host, logger: logger,
            selfEndpoint: { [weak self] in self?.endpoint.description ?? "" },
            announcement: { [weak self] seq, instance in
                guard let self, !self.isStopping else { return nil }
                let (serves, hash) = self.core.withLock { _ in
                    (self.model.trainer != nil, self.model.trainer?.parameters.schemaHash ?? 0)
                }
                return Announcement(endpoint: self.endpoint.description, identity: self.config.security.advertisedIdentity,
                                    servesModel: serves, instance: instance, sequence: seq, schemaHash: hash)
            },
            onCandidate: { [weak self] endpoint, _ in self?.discovered(endpoint) })
        discovery.set(service)
        service.start()
    }

    /// An announced candidate: contact it unless it is a member already.
    private func discovered(_ endpoint: String) {
        guard !isStopping else { return }
        let known = core.withLock { $0.state.membership.records[endpoint] != nil }
        guard !known else { return }
        if discovery.enqueue(endpoint) { pumpDiscovery() }
    }

    /// Contacts queued candidates one at a time (Register); each reply's peers and the
    /// candidate itself join the membership.
    private func pumpDiscovery() {
        guard !isStopping, let endpoint = discovery.next() else { return }
        guard let ep = try? Endpoint(parsing: endpoint) else { pumpDiscovery(); return }
        let hash = core.withLock { _ in model.trainer?.parameters.schemaHash } ?? 0
        guard let payload = try? WireCodec.encode(RegisterRequest(endpoint: self.endpoint.description, schemaHash: hash)) else { return }
        client.call(ep, type: .register, payload: payload, deadline: .seconds(5)) { [weak self] result in
            guard let self else { return }
            switch result {
            case .success(let msg):
                do {
                    let reply = try WireCodec.decodeRegisterReply(msg.payload)
                    let bad = self.core.withLock { c in
                        c.state.membership.markSuccess(endpoint)
                        return c.state.membership.merge(entries: WirePeers.entries(reply.peers)).contradicting
                    }
                    self.logContradicting(bad, from: endpoint)
                    self.discovery.service?.noteContact(joined: true)
                    self.logger.info("discovered a member", metadata: ["peer": "\(endpoint)", "peers_listed": "\(reply.peers.entries.count)"])
                } catch {
                    self.discovery.service?.noteContact(joined: false)
                    self.discovery.coolDown(endpoint, for: PeerDiscovery.cooldown)
                    self.logger.warning("discovery: register reply malformed", metadata: ["from": "\(endpoint)", "error": "\(error)"])
                }
            case .failure(let err):
                self.discovery.service?.noteContact(joined: false)
                let foreign = err.code == .failedPrecondition
                self.discovery.coolDown(endpoint, for: foreign ? PeerDiscovery.foreignCooldown : PeerDiscovery.cooldown)
                if foreign {
                    self.logger.warning("discovery: an announced node belongs to another network (its model schema differs); ignored for \(PeerDiscovery.foreignCooldown)",
                                        metadata: ["peer": "\(endpoint)", "error": "\(err.message)"])
                } else {
                    self.logger.debug("discovery: candidate unreachable", metadata: ["peer": "\(endpoint)", "error": "\(err)"])
                }
            }
            DispatchQueue.global().asyncAfter(deadline: .now() + .milliseconds(100)) { [weak self] in self?.pumpDiscovery() }
        }
    }
}
