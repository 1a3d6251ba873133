// Soft-state membership: the peers a node knows, how each last answered, and the random
// choice of a gossip partner. Peers are learned from Register and GossipExchange replies and
// from incoming exchanges; a peer that fails `dropAfter` contacts in a row is forgotten, and
// is welcome again as soon as it shows up anew. Only strings that parse as HOST:PORT are
// ever admitted, whatever other nodes send.
//
// Pinning (issue 9, contract D): the identity (Curve25519 public key) an endpoint proved in
// the handshake when this node dialed it is pinned for the life of the process; a later
// connection to that endpoint proving another identity is refused, and a peer-list entry whose
// identity contradicts the pin is dropped. Identities that peer lists claim for endpoints not
// dialed yet are remembered as claims and checked at the first dial. Threat model: this
// defends against an insider taking over an endpoint another member proved; it cannot tell
// which of two keys is "right" for an endpoint never dialed (the first proof wins).
import GossipNet
import GossipSecure
import GossipWire

/// What a node knows of one other node.
public struct PeerRecord: Sendable, Equatable {
    public let endpoint: String
    public var consecutiveFailures: Int = 0
    public var exchanges: Int = 0
    public var lastSeen: ContinuousClock.Instant?
    /// Not chosen as a gossip partner before this instant (after a failed contact; SPEC §5.6).
    public var backoffUntil: ContinuousClock.Instant?
    /// When the current run of failed contacts began (nil after a success).
    public var failingSince: ContinuousClock.Instant?
}

/// The peer table. Not thread-safe: its owner serialises access.
public struct Membership: Sendable {
    /// This node's own endpoint, never listed as a peer.
    public private(set) var selfEndpoint: String
    /// Failed contacts in a row after which a peer is dropped.
    public let dropAfter: Int
    /// Most peers kept.
    public let capacity: Int
    /// How long a dropped peer is not re-learned from other nodes' lists (it is still
    /// welcome at once when it contacts this node itself).
    public let forgetFor: Duration
    public private(set) var records: [String: PeerRecord] = [:]
    /// Peers dropped recently, with when.
    private var dropped: [String: ContinuousClock.Instant] = [:]
    /// Identities proven by endpoints this node dialed (pinned for the life of the process).
    public private(set) var pins: [String: [UInt8]] = [:]
    /// Identities peer lists claimed for endpoints not pinned yet (checked at the first dial).
    private var claims: [String: [UInt8]] = [:]
    /// Most pins and claims kept (each); past it, those of non-members are forgotten first.
    public var pinCapacity = 4096
    /// Backoff after the first failed contact in a row; doubles per further failure (SPEC §5.6).
    public var backoffBase: Duration = .seconds(1)
    /// The longest backoff.
    public var backoffMax: Duration = .seconds(30)
    /// A soft failure (a short Reserve deadline missed, SPEC §5.6) counts toward the drop only
    /// once the peer has failed for at least this long: a busy machine's late answer backs a
    /// peer off, it does not make it forgotten.
    public var softDropAfter: Duration = .seconds(10)
    /// SWIM decides liveness (SPEC §5.10): failed contacts back a peer off but never drop it;
    /// the node removes a peer when SWIM declares it dead.
    public var swimManaged = false

    public init(selfEndpoint: String, dropAfter: Int = 3, capacity: Int = 1024, forgetFor: Duration = .seconds(30)) {
        self.selfEndpoint = selfEndpoint
        self.dropAfter = dropAfter
        self.capacity = capacity
        self.forgetFor = forgetFor
    }

    /// Known peers, sorted.
    public var endpoints: [String] { records.keys.sorted() }
    public var count: Int { records.count }

    /// Adds peers not yet known (ignores self, empty strings and peers dropped within
    /// `forgetFor`, which other nodes may still list). Returns the ones added.
    @discardableResult
    public mutating func merge(_ peers: [String], now: ContinuousClock.Instant = .now) -> [String] {
        var added: [String] = []
        for p in peers where !p.isEmpty && p != selfEndpoint && records[p] == nil && Membership.isEndpoint(p) {
            guard records.count < capacity else { break }
            if let when = dropped[p] {
                if now - when < forgetFor { continue }
                dropped[p] = nil
            }
            records[p] = PeerRecord(endpoint: p)
            added.append(p)
        }
        return added
    }

    /// Records a successful contact (adding the peer if it was unknown).
    public mutating func markSuccess(_ p: String, now: ContinuousClock.Instant = .now, exchange: Bool = false) {
        guard p != selfEndpoint, !p.isEmpty, Membership.isEndpoint(p) else { return }
        dropped[p] = nil
        if records[p] == nil { merge([p], now: now) }
        records[p]?.consecutiveFailures = 0
        records[p]?.backoffUntil = nil
        records[p]?.failingSince = nil
        records[p]?.lastSeen = now
        if exchange { records[p]?.exchanges += 1 }
    }

    /// Records a failed contact: the peer is backed off (`backoff(afterFailures:)`) and dropped
    /// after `dropAfter` failures in a row. Returns true when the peer was dropped by this failure.
    /// - Parameter soft: a short deadline missed (SPEC §5.6): it backs the peer off, and counts
    ///   toward the drop only once the peer has been failing for `softDropAfter`.
    @discardableResult
    public mutating func markFailure(_ p: String, now: ContinuousClock.Instant = .now, soft: Bool = false) -> Bool {
        guard var r = records[p] else { return false }
        r.consecutiveFailures += 1
        if r.failingSince == nil { r.failingSince = now }
        let silentLongEnough = !soft || now - r.failingSince! >= softDropAfter
        if r.consecutiveFailures >= dropAfter && silentLongEnough && !swimManaged {
            records[p] = nil
            dropped[p] = now
            return true
        }
        r.backoffUntil = now + backoff(afterFailures: r.consecutiveFailures)
        records[p] = r
        return false
    }

    /// How long a peer is not chosen after `n` (≥ 1) failed contacts in a row:
    /// `min(backoffBase × 2^(n−1), backoffMax)` (SPEC §5.6).
    public func backoff(afterFailures n: Int) -> Duration {
        guard n > 0 else { return .zero }
        var d = backoffBase
        for _ in 1..<min(n, 32) {
            d = d * 2
            if d >= backoffMax { return backoffMax }
        }
        return min(d, backoffMax)
    }

    /// True when `p` is known and backed off at `now`.
    public func isBackedOff(_ p: String, now: ContinuousClock.Instant = .now) -> Bool {
        guard let until = records[p]?.backoffUntil else { return false }
        return now < until
    }

    /// The peers that may be chosen as a gossip partner at `now` (known, not backed off), sorted.
    public func choosable(now: ContinuousClock.Instant = .now) -> [String] {
        records.values.filter { r in r.backoffUntil.map { now >= $0 } ?? true }.map(\.endpoint).sorted()
    }

    /// Sets this node's own endpoint (known once it is bound), keeping the peers learned so far.
    public mutating func setSelf(_ endpoint: String) {
        selfEndpoint = endpoint
        records[endpoint] = nil
    }

    /// True when `s` is a HOST:PORT other nodes can be reached at (port 0 is not).
    public static func isEndpoint(_ s: String) -> Bool {
        guard let e = try? Endpoint(parsing: s) else { return false }
        return e.port != 0
    }

    // MARK: - identities (pinning)

    /// The outcome of checking the identity an endpoint proved when this node dialed it.
    public enum PinVerdict: Sendable, Equatable {
        /// The identity matches the pin, or was pinned now (`first`).
        case accepted(first: Bool)
        /// Refused: the text says why (for the log and the caller's error).
        case refused(String)
    }

    /// Checks the identity `endpoint` proved in the handshake of a connection this node
    /// dialed; pins it on first contact. A contradiction of the pin, or of the identity a peer
    /// list claimed before the first dial, is refused, and on a first-dial mismatch the
    /// endpoint is dropped from the table (with its claim) until it shows up anew.
    public mutating func verify(endpoint: String, proven: [UInt8]) -> PinVerdict {
        let hex = Membership.hex(proven)
        if let pinned = pins[endpoint] {
            if constantTimeEqual(pinned, proven) { return .accepted(first: false) }
            return .refused("\(endpoint) proved identity \(hex), but it proved \(Membership.hex(pinned)) before: refusing the connection (another node now answers at this address; if the node there was re-keyed on purpose, restart this node to forget the old identity)")
        }
        if let claimed = claims[endpoint], !constantTimeEqual(claimed, proven) {
            claims[endpoint] = nil
            if records[endpoint] != nil { remove(endpoint) }
            return .refused("\(endpoint) proved identity \(hex), but a peer list gave it \(Membership.hex(claimed)): refusing the connection and dropping the entry")
        }
        claims[endpoint] = nil
        if pins.count >= pinCapacity { makeRoom(inPins: true) }
        pins[endpoint] = proven
        return .accepted(first: true)
    }

    /// Adds the endpoints of peer-list entries (as `merge(_:)` does), after checking their
    /// identities: an entry whose identity contradicts the pinned one is dropped; a claimed
    /// identity of an endpoint not pinned yet is remembered and checked at the first dial.
    /// - Returns: the endpoints added, and the entries dropped for a contradicting identity.
    @discardableResult
    public mutating func merge(entries: [PeerEntry], now: ContinuousClock.Instant = .now) -> (added: [String], contradicting: [PeerEntry]) {
        var accepted: [String] = []
        var contradicting: [PeerEntry] = []
        for e in entries {
            if let id = e.identity, e.endpoint != selfEndpoint {
                if let pinned = pins[e.endpoint] {
                    if !constantTimeEqual(pinned, id) { contradicting.append(e); continue }
                } else if id.count == 32, Membership.isEndpoint(e.endpoint) {
                    if claims[e.endpoint] == nil {
                        if claims.count >= pinCapacity { makeRoom(inPins: false) }
                        claims[e.endpoint] = id
                    }
                }
            }
            accepted.append(e.endpoint)
        }
        return (merge(accepted, now: now), contradicting)
    }

    /// The identity `endpoint` proved (nil: not dialed, or a plaintext network).
    public func identity(of endpoint: String) -> [UInt8]? { pins[endpoint] }

    /// `endpoints` as peer-list entries: this node's own with `selfIdentity`, the others with
    /// the identity they proved (nil when not known).
    public func entries(_ endpoints: [String], selfIdentity: [UInt8]?) -> [PeerEntry] {
        endpoints.map { PeerEntry(endpoint: $0, identity: $0 == selfEndpoint ? selfIdentity : pins[$0]) }
    }

    /// Frees room in a pin or claim table: forgets the entries of non-members, or if all are
    /// members, the first quarter in sorted order.
    private mutating func makeRoom(inPins: Bool) {
        let keys = inPins ? Array(pins.keys) : Array(claims.keys)
        var gone = keys.filter { records[$0] == nil }
        if gone.isEmpty { gone = Array(keys.sorted().prefix(max(1, keys.count / 4))) }
        for k in gone { if inPins { pins[k] = nil } else { claims[k] = nil } }
    }

    /// 64 lowercase hex digits.
    static func hex(_ key: [UInt8]) -> String {
        key.map { b in let s = String(b, radix: 16); return b < 16 ? "0" + s : s }.joined()
    }

    /// Forgets a peer at once (e.g. it runs an incompatible model).
    public mutating func remove(_ p: String) {
        records[p] = nil
        dropped[p] = .now
    }

    /// The peer list of a Register or GossipExchange reply to `requester` (SPEC §5.1, §5.3):
    /// this node's own endpoint first (when it has one: a peer; a bootstrap has none), then
    /// every known peer in sorted order, never the requester itself; at most `limit` entries.
    public func replyPeers(for requester: String, limit: Int) -> [String] {
        var list = selfEndpoint.isEmpty || selfEndpoint == requester ? [] : [selfEndpoint]
        list += endpoints.lazy.filter { $0 != requester }
        return Array(list.prefix(max(0, limit)))
    }

    /// A peer chosen uniformly at random; nil when none is known. Peers with recent failures
    /// stay in the draw, so a dead peer is tried again (failing fast) until it is dropped.
    public func randomPeer<G: RandomNumberGenerator>(excluding: Set<String> = [], using rng: inout G) -> String? {
        let candidates = records.keys.filter { !excluding.contains($0) }.sorted()
        return candidates.randomElement(using: &rng)
    }
}
