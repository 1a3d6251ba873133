// Soft-state membership: the peers a node knows, how each last answered, and the random
// choice of a gossip partner. Peers are learned from Register and GossipExchange replies and
// from incoming exchanges; a peer that fails `dropAfter` contacts in a row is forgotten, and
// is welcome again as soon as it shows up anew. Only strings that parse as HOST:PORT are
// ever admitted, whatever other nodes send.
import GossipNet

/// What a node knows of one other node.
public struct PeerRecord: Sendable, Equatable {
    public let endpoint: String
    public var consecutiveFailures: Int = 0
    public var exchanges: Int = 0
    public var lastSeen: ContinuousClock.Instant?
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
        records[p]?.lastSeen = now
        if exchange { records[p]?.exchanges += 1 }
    }

    /// Records a failed contact. Returns true when the peer was dropped by this failure.
    @discardableResult
    public mutating func markFailure(_ p: String) -> Bool {
        guard var r = records[p] else { return false }
        r.consecutiveFailures += 1
        if r.consecutiveFailures >= dropAfter {
            records[p] = nil
            dropped[p] = .now
            return true
        }
        records[p] = r
        return false
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
