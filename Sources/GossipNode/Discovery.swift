// LAN discovery (SPEC §5.11, `gossipd peer --discover multicast[:GROUP:PORT]`): members
// announce themselves on an IPv4 multicast group; a starting peer with neither --bootstrap
// nor --join learns candidates from the announcements and joins through them (Register, then
// GetModel, as with --join), and every member keeps learning new members the same way.
//
// Threat model. An announcement only proposes a candidate: nothing it says enters the
// membership until a Register to the candidate succeeded over TCP (the secure channel when a
// network key is set, which also proves the candidate's identity). What a hostile sender can
// do is bounded here: datagrams past a token bucket (20/s, burst 40) are dropped before any
// decoding or decryption; one datagram is at most 512 bytes; with a network key only sealed
// datagrams (DatagramSeal) are accepted, without one only plain frames (plaintext is allowed
// exactly where plaintext TCP is: loopback or --insecure); at most 32 candidates wait for a
// contact, contacted one at a time; a candidate that failed is not tried again for 10 s.
// Every drop is counted by reason (status `discovery`).
import Dispatch
import Foundation
import GossipNet
import GossipWire
import Logging
import Synchronization

/// Seals and opens datagrams with the network key (SPEC §13.13, "Sealed datagrams").
public struct DatagramSealing: Sendable {
    public var seal: @Sendable ([UInt8]) -> [UInt8]?
    /// The plaintext frame, or nil when the datagram does not authenticate.
    public var open: @Sendable ([UInt8]) -> [UInt8]?
    public init(seal: @escaping @Sendable ([UInt8]) -> [UInt8]?, open: @escaping @Sendable ([UInt8]) -> [UInt8]?) {
        self.seal = seal
        self.open = open
    }
}

/// Where and how often to announce (`--discover multicast[:GROUP:PORT]`).
public struct DiscoveryConfig: Sendable {
    /// The default group and port: administratively scoped (RFC 2365), one of our choosing.
    public static let defaultGroup = "239.255.71.71"
    public static let defaultPort: UInt16 = 47171

    public var group = DiscoveryConfig.defaultGroup
    public var port = DiscoveryConfig.defaultPort
    /// Mean interval between announcements; each one is jittered by ±25 %.
    public var interval: Duration = .seconds(2)
    /// IP_MULTICAST_TTL: 1 keeps announcements on the local link.
    public var ttl: Int32 = 1
    /// With a network key: datagrams are sealed and only sealed ones are accepted.
    public var sealing: DatagramSealing?
    /// Announcements processed per second (token bucket rate) and burst.
    public var ratePerSecond: Double = 20
    public var burst: Double = 40

    public init() {}

    /// Parses `multicast` or `multicast:GROUP:PORT`.
    /// - Throws: `NodeError` naming the accepted forms.
    public init(parsing text: String) throws {
        self.init()
        let parts = text.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
        guard parts.first == "multicast", parts.count == 1 || parts.count == 3 else {
            throw NodeError("--discover '\(text)': use multicast (group \(DiscoveryConfig.defaultGroup), port \(DiscoveryConfig.defaultPort)) or multicast:GROUP:PORT, e.g. multicast:239.255.0.7:47000")
        }
        if parts.count == 3 {
            let octets = parts[1].split(separator: ".").compactMap { UInt8($0) }
            guard octets.count == 4, (224...239).contains(octets[0]) else {
                throw NodeError("--discover: '\(parts[1])' is not an IPv4 multicast group (224.0.0.0 to 239.255.255.255; use 239.255.x.y on a LAN)")
            }
            guard let p = UInt16(parts[2]), p > 0 else {
                throw NodeError("--discover: port '\(parts[2])' must be 1...65535")
            }
            group = parts[1]
            port = p
        }
    }
}

/// Counters of announcements received, by outcome (status `discovery`).
public struct DiscoveryCounters: Codable, Sendable, Equatable {
    public var received = 0
    public var accepted = 0
    /// Not one valid Announce frame (garbage, another type, bad checksum, bad fields).
    public var malformed = 0
    /// Longer than 512 bytes.
    public var oversized = 0
    /// Did not open with the network key (or plain where sealed ones are required).
    public var unauthenticated = 0
    /// Past the token bucket.
    public var rateLimited = 0
    /// An (instance, sequence) already seen from that endpoint, or older.
    public var replayed = 0
    /// This node's own announcements (looped back).
    public var own = 0
    /// Announcements this node sent.
    public var sent = 0
    /// Candidates contacted, and how many of those contacts succeeded.
    public var contacted = 0
    public var joined = 0

    enum CodingKeys: String, CodingKey {
        case received, accepted, malformed, oversized, unauthenticated, rateLimited = "rate_limited", replayed, own, sent
        case contacted, joined
    }

    public init() {}
}

/// Decides what one received datagram is worth (a pure value: no sockets, no clocks).
public struct AnnounceFilter: Sendable {
    public enum Verdict: Equatable, Sendable {
        /// A candidate to contact at `endpoint` (the announced one, its unspecified host
        /// replaced by the datagram's source).
        case candidate(endpoint: String, Announcement)
        case dropped(String)
    }

    public private(set) var counters = DiscoveryCounters()
    /// This process's announcement instance (its own datagrams are dropped).
    public let instance: UInt64
    private let sealing: DatagramSealing?
    private let rate: Double, burst: Double
    private var tokens: Double
    private var refilledAt: Duration = .zero
    /// The last (instance, sequence) per announced endpoint; at most `maxTracked`.
    private var last: [String: (UInt64, UInt32)] = [:]
    static let maxTracked = 1024

    public init(instance: UInt64, sealing: DatagramSealing?, ratePerSecond: Double = 20, burst: Double = 40) {
        self.instance = instance
        self.sealing = sealing
        self.rate = ratePerSecond
        self.burst = burst
        self.tokens = burst
    }

    /// Judges one datagram: `bytes` (at most the first `maxDatagramBytes` of it), its full
    /// length, the sender's IP, and `now` (time since any fixed origin).
    public mutating func admit(_ bytes: [UInt8], fullLength: Int, source: String, selfEndpoint: String, now: Duration) -> Verdict {
        counters.received += 1
        tokens = min(burst, tokens + max(0, (now - refilledAt).seconds) * rate)
        refilledAt = now
        guard tokens >= 1 else { counters.rateLimited += 1; return .dropped("rate limited") }
        tokens -= 1
        let sealOverhead = sealing == nil ? 0 : 12 + 16
        guard fullLength <= Announcement.maxDatagramBytes + sealOverhead, bytes.count == fullLength else {
            counters.oversized += 1
            return .dropped("oversized datagram of \(fullLength) bytes")
        }
        var frame = bytes
        if let sealing {
            guard let opened = sealing.open(bytes) else {
                counters.unauthenticated += 1
                return .dropped("did not open with the network key")
            }
            frame = opened
        }
        let a: Announcement
        do { a = try Announcement.decode(datagram: frame) } catch {
            counters.malformed += 1
            return .dropped("malformed: \(error)")
        }
        if a.instance == instance || a.endpoint == selfEndpoint {
            counters.own += 1
            return .dropped("own announcement")
        }
        var endpoint = a.endpoint
        if let ep = try? Endpoint(parsing: a.endpoint), ep.host == "0.0.0.0" || ep.host == "::" {
            endpoint = Endpoint(host: source, port: ep.port).description
        }
        guard Membership.isEndpoint(endpoint), endpoint != selfEndpoint else {
            counters.malformed += 1
            return .dropped("'\(a.endpoint)' is not a dialable HOST:PORT")
        }
        if let (inst, seq) = last[endpoint], inst == a.instance, a.sequence <= seq {
            counters.replayed += 1
            return .dropped("replayed (sequence \(a.sequence), last \(seq))")
        }
        if last[endpoint] == nil, last.count >= AnnounceFilter.maxTracked { last.removeAll(keepingCapacity: true) }
        last[endpoint] = (a.instance, a.sequence)
        counters.accepted += 1
        return .candidate(endpoint: endpoint, a)
    }

    mutating func noteSent() { counters.sent += 1 }
    mutating func noteContact(joined: Bool) {
        counters.contacted += 1
        if joined { counters.joined += 1 }
    }
}

/// The running discovery of one node: the multicast socket, the announcement timer and the
/// filter. `@unchecked Sendable`: mutable state is behind `state` (a Mutex) or on `queue`.
public final class DiscoveryService: @unchecked Sendable {
    public let config: DiscoveryConfig
    private let socket: MulticastSocket
    private let queue = DispatchQueue(label: "gossip.discovery")
    private let logger: Logger
    private let started = ContinuousClock.now
    private struct State {
        var filter: AnnounceFilter
        var sequence: UInt32 = 0
        var stopped = false
    }
    /// The next announcement; touched on `queue` only.
    private var timer: DispatchSourceTimer?
    private let state: Mutex<State>
    private let announcement: @Sendable (UInt32, UInt64) -> Announcement?
    private let onCandidate: @Sendable (String, Announcement) -> Void
    private let selfEndpoint: @Sendable () -> String

    /// - Parameters:
    ///   - interface: IPv4 address of the interface to announce and listen on (the listen
    ///     host; nil or 0.0.0.0: the kernel's choice).
    ///   - announcement: builds this node's announcement for (sequence, instance); nil skips one.
    ///   - onCandidate: called (on the discovery queue) for each accepted announcement.
    /// - Throws: `NodeError` when the group cannot be joined.
    public init(config: DiscoveryConfig, interface: String?, logger: Logger,
                selfEndpoint: @escaping @Sendable () -> String,
                announcement: @escaping @Sendable (UInt32, UInt64) -> Announcement?,
                onCandidate: @escaping @Sendable (String, Announcement) -> Void) throws {
        self.config = config
        self.logger = logger
        self.announcement = announcement
        self.onCandidate = onCandidate
        self.selfEndpoint = selfEndpoint
        let iface = interface.flatMap { h in h.contains(":") ? nil : h }
        do throws(RPCError) {
            socket = try MulticastSocket(group: config.group, port: config.port, interface: iface, ttl: config.ttl,
                                         maxDatagramBytes: 2048, queue: queue)
        } catch {
            throw NodeError("--discover: \(error.message)")
        }
        var instance: UInt64 = 0
        while instance == 0 { instance = UInt64.random(in: 1...UInt64.max) }
        state = Mutex(State(filter: AnnounceFilter(instance: instance, sealing: config.sealing,
                                                   ratePerSecond: config.ratePerSecond, burst: config.burst)))
    }

    /// Counters so far.
    public var counters: DiscoveryCounters { state.withLock { $0.filter.counters } }

    func noteContact(joined: Bool) { state.withLock { $0.filter.noteContact(joined: joined) } }

    /// Starts listening and announcing (one announcement at once, then every interval ±25 %).
    public func start() {
        socket.start { [weak self] bytes, full, source in self?.received(bytes, full, source) }
        logger.info("discovery: announcing and listening", metadata: ["group": "\(config.group):\(config.port)", "ttl": "\(config.ttl)",
                                                                     "sealed": "\(config.sealing != nil)"])
        queue.async { [self] in
            announceNow()
            scheduleNext()
        }
    }

    /// Stops announcing and closes the socket.
    public func stop() {
        state.withLock { $0.stopped = true }
        queue.async { [self] in
            timer?.cancel()
            timer = nil
        }
        socket.close()
    }

    /// On `queue`.
    private func scheduleNext() {
        guard !state.withLock({ $0.stopped }) else { return }
        let ms = config.interval.seconds * 1000 * Double.random(in: 0.75...1.25)
        let t = DispatchSource.makeTimerSource(queue: queue)
        t.schedule(deadline: .now() + .milliseconds(max(10, Int(ms))))
        t.setEventHandler { [weak self] in
            guard let self else { return }
            self.announceNow()
            self.scheduleNext()
        }
        timer?.cancel()
        timer = t
        t.resume()
    }

    /// Sends one announcement now.
    public func announceNow() {
        let (seq, inst, stopped) = state.withLock { s -> (UInt32, UInt64, Bool) in
            s.sequence &+= 1
            return (s.sequence, s.filter.instance, s.stopped)
        }
        guard !stopped, let a = announcement(seq, inst) else { return }
        guard var bytes = try? a.encodeDatagram() else {
            logger.warning("discovery: this node's announcement does not fit a datagram", metadata: ["endpoint": "\(a.endpoint)"])
            return
        }
        if let sealing = config.sealing {
            guard let sealed = sealing.seal(bytes) else { return }
            bytes = sealed
        }
        socket.send(bytes) { [weak self] ok in
            if ok { self?.state.withLock { $0.filter.noteSent() } }
        }
    }

    private func received(_ bytes: [UInt8], _ full: Int, _ source: String) {
        let now = ContinuousClock.now - started
        let me = selfEndpoint()
        let verdict = state.withLock { $0.filter.admit(bytes, fullLength: full, source: source, selfEndpoint: me, now: now) }
        switch verdict {
        case .candidate(let endpoint, let a):
            onCandidate(endpoint, a)
        case .dropped(let why):
            if why != "own announcement" {
                logger.debug("discovery: datagram dropped", metadata: ["from": "\(source)", "why": "\(why)"])
            }
        }
    }
}
