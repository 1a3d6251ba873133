// `gossipctl watch`: a live view of a whole network from one endpoint. `WatchTable` is the
// state with no I/O (which nodes are known, what each said last, when it stopped answering);
// `NetworkWatch` walks the peer lists and polls every node each tick, in parallel with a
// bound; `WatchRender` turns a snapshot into text rows or one JSON object. Tests drive the
// table and the walk with injected fetch functions, and the command with real processes.
//
// Threat model: every node we talk to may lie. What it can make us do is bounded: at most
// `maxNodes` endpoints are ever watched (the rest are counted, not stored), an endpoint is
// kept only when it parses as HOST:PORT, text a node sends (role, phase) is shown with control
// characters replaced and cut to a short length (no terminal escapes from a node), and models
// for the distance are fetched from at most `WatchTable.maxDistancePeers` peers per
// computation, each bounded by the RPC client's limits.
import Foundation
import GossipML
import GossipNet
import GossipWire

/// One node as the watcher knows it.
public struct WatchedNode: Sendable, Equatable {
    /// HOST:PORT, as dialed.
    public let endpoint: String
    /// Its last status answer; nil until it first answered.
    public var status: StatusReport?
    /// When it last answered.
    public var lastSeen: Date?
    /// When the watcher first learned of it.
    public var firstKnown: Date
    /// Why the last poll failed; nil when the last poll answered (or before the first poll).
    public var error: String?
    /// Polls so far.
    public var polls = 0

    /// True when the last poll answered.
    public var up: Bool { error == nil && lastSeen != nil }
}

/// The largest pairwise model distance of one computation.
public struct WatchDistance: Sendable, Equatable {
    /// max over pairs of `Averaging.relativeL2Distance`, both directions.
    public var value: Double
    /// Peers whose models were compared.
    public var peers: Int
    /// Peers left out: another schema than the majority's, or no model fetched.
    public var skipped: Int
    /// The schema compared (16 hex digits).
    public var schemaHash: String
    public var computedAt: Date
    /// The tick it was computed in.
    public var tick: Int
}

/// The watcher's state: known nodes and what they said. No I/O.
public struct WatchTable: Sendable {
    /// Default (and hard maximum) for the number of nodes watched.
    public static let defaultMaxNodes = 256
    public static let hardMaxNodes = 4096
    /// At most this many peers' models are held at once to compute the distance.
    public static let maxDistancePeers = 64
    /// Role and phase strings longer than this are cut.
    public static let maxFieldLength = 24

    public let maxNodes: Int
    public private(set) var nodes: [String: WatchedNode] = [:]
    /// Endpoints learned but not watched because `maxNodes` was reached.
    public private(set) var overflow: Set<String> = []
    /// Peer-list entries that did not parse as HOST:PORT (count).
    public private(set) var malformed = 0

    public init(maxNodes: Int = WatchTable.defaultMaxNodes) {
        self.maxNodes = max(1, min(maxNodes, WatchTable.hardMaxNodes))
    }

    /// Adds `endpoint` (normalized through `Endpoint(parsing:)`); returns the normalized form
    /// when it was new and is now watched, nil when known, malformed or over the bound.
    @discardableResult
    public mutating func learn(_ endpoint: String, now: Date) -> String? {
        guard endpoint.utf8.count <= 300, let ep = try? Endpoint(parsing: endpoint) else {
            malformed += 1
            return nil
        }
        let key = ep.description
        if nodes[key] != nil { return nil }
        guard nodes.count < maxNodes else {
            if overflow.count < WatchTable.hardMaxNodes { overflow.insert(key) }
            return nil
        }
        nodes[key] = WatchedNode(endpoint: key, firstKnown: now)
        return key
    }

    /// Records one poll's outcome; returns the endpoints it taught us (newly watched).
    @discardableResult
    public mutating func record(_ endpoint: String, _ result: Result<StatusReport, WatchPollError>, now: Date) -> [String] {
        guard var n = nodes[endpoint] else { return [] }
        n.polls += 1
        switch result {
        case .success(let s):
            n.status = s
            n.lastSeen = now
            n.error = nil
            nodes[endpoint] = n
            return WatchTable.neighbours(of: s).compactMap { learn($0, now: now) }
        case .failure(let e):
            n.error = e.message
            nodes[endpoint] = n
            return []
        }
    }

    /// The endpoints a status names: its peers and, for a peer, its bootstrap.
    public static func neighbours(of s: StatusReport) -> [String] {
        s.peers + (s.bootstrap.map { [$0] } ?? [])
    }

    /// Rows in display order: bootstraps, then peers, then nodes whose role is not known;
    /// by endpoint within each group (port numerically).
    public var rows: [WatchedNode] {
        func rank(_ n: WatchedNode) -> Int {
            switch n.status?.role { case "bootstrap": 0; case "peer": 1; case nil: 3; default: 2 }
        }
        func key(_ e: String) -> (String, Int) {
            guard let ep = try? Endpoint(parsing: e) else { return (e, 0) }
            return (ep.host, Int(ep.port))
        }
        return nodes.values.sorted { a, b in
            let ra = rank(a), rb = rank(b)
            if ra != rb { return ra < rb }
            let ka = key(a.endpoint), kb = key(b.endpoint)
            return ka.0 != kb.0 ? ka.0 < kb.0 : ka.1 < kb.1
        }
    }
}

/// Why a poll got no status.
public struct WatchPollError: Error, Sendable, Equatable {
    public var message: String
    public init(_ message: String) { self.message = message }
}

/// The largest pairwise relative L2 distance among `models` (endpoint, model): over the
/// largest group sharing one schema (ties: the smaller schema hash); nil with fewer than two
/// models of one schema. The distance is asymmetric, so both directions count.
public func watchMaxDistance(_ models: [(String, ParameterSet)]) -> (value: Double, peers: Int, skipped: Int, schemaHash: UInt64)? {
    var groups: [UInt64: [ParameterSet]] = [:]
    for (_, m) in models { groups[m.schemaHash, default: []].append(m) }
    guard let (hash, group) = groups.max(by: { a, b in a.value.count != b.value.count ? a.value.count < b.value.count : a.key > b.key }),
          group.count >= 2 else { return nil }
    var worst = 0.0
    for i in 0..<group.count {
        for j in (i + 1)..<group.count {
            let d = max(Averaging.relativeL2Distance(group[i], group[j]), Averaging.relativeL2Distance(group[j], group[i]))
            if d.isFinite { worst = max(worst, d) } else { worst = .infinity }
        }
    }
    return (worst, group.count, models.count - group.count, hash)
}

/// Walks a network and polls its nodes. Not thread-safe: one caller drives `tick()`; the
/// fetch functions are called from several threads at once (at most `parallel`).
public final class NetworkWatch: @unchecked Sendable {
    public typealias FetchStatus = @Sendable (String) -> Result<StatusReport, WatchPollError>
    public typealias FetchModel = @Sendable (String) -> ParameterSet?

    public private(set) var table: WatchTable
    public private(set) var tick = 0
    public private(set) var distance: WatchDistance?
    public let seed: String
    let parallel: Int
    let distanceEvery: Int
    let fetchStatus: FetchStatus
    let fetchModel: FetchModel?
    let clock: @Sendable () -> Date

    /// - Parameters:
    ///   - seed: the first endpoint (HOST:PORT).
    ///   - maxNodes: the most nodes watched (1...4096).
    ///   - parallel: the most polls in flight at once (1...64).
    ///   - distanceEvery: compute the model distance on tick 1 and every this many ticks after
    ///     (0: never).
    /// - Throws: `WatchPollError` when `seed` is not HOST:PORT.
    public init(seed: String, maxNodes: Int = WatchTable.defaultMaxNodes, parallel: Int = 16, distanceEvery: Int = 5,
                fetchStatus: @escaping FetchStatus, fetchModel: FetchModel?,
                clock: @escaping @Sendable () -> Date = { Date() }) throws(WatchPollError) {
        var t = WatchTable(maxNodes: maxNodes)
        guard let s = t.learn(seed, now: clock()) else { throw WatchPollError("'\(seed)' is not HOST:PORT") }
        self.seed = s
        self.table = t
        self.parallel = max(1, min(parallel, 64))
        self.distanceEvery = max(0, distanceEvery)
        self.fetchStatus = fetchStatus
        self.fetchModel = fetchModel
        self.clock = clock
    }

    /// Runs `work` on every element, at most `parallel` at once; results in input order.
    func parallelMap<T: Sendable>(_ items: [String], _ work: @escaping @Sendable (String) -> T) -> [T] {
        let r = ParallelResults<T>(items.count)
        let group = DispatchGroup()
        for _ in 0..<min(parallel, items.count) {
            DispatchQueue.global().async(group: group) {
                while true {
                    let i: Int? = r.lock.withLock {
                        guard r.next < items.count else { return nil }
                        defer { r.next += 1 }
                        return r.next
                    }
                    guard let i else { return }
                    let v = work(items[i])
                    r.lock.withLock { r.values[i] = v }
                }
            }
        }
        group.wait()
        return r.values.map { $0! }
    }

    /// One tick: polls every known node (in parallel), then the nodes their answers named
    /// until no new endpoint appears (bounded by `maxNodes`); every `distanceEvery` ticks
    /// (and on the first) fetches the peers' models and computes the largest distance.
    public func step() {
        tick += 1
        var batch = Array(table.nodes.keys).sorted()
        var rounds = 0
        while !batch.isEmpty, rounds <= table.maxNodes {
            rounds += 1
            let fetch = fetchStatus
            let results = parallelMap(batch) { fetch($0) }
            var learned: [String] = []
            let now = clock()
            for (e, r) in zip(batch, results) { learned += table.record(e, r, now: now) }
            batch = learned
        }
        if let fetchModel, distanceEvery > 0, (tick - 1) % distanceEvery == 0 {
            let peers = table.rows.filter { $0.up && $0.status?.role == "peer" }.map(\.endpoint)
            let chosen = Array(peers.prefix(WatchTable.maxDistancePeers))
            let models = parallelMap(chosen) { fetchModel($0) }
            let got = zip(chosen, models).compactMap { e, m in m.map { (e, $0) } }
            if let d = watchMaxDistance(got) {
                distance = WatchDistance(value: d.value, peers: d.peers, skipped: d.skipped + (chosen.count - got.count),
                                         schemaHash: StatusReport.hex(d.schemaHash), computedAt: clock(), tick: tick)
            }
        }
    }

    /// The current state for rendering.
    public var snapshot: WatchSnapshot {
        WatchSnapshot(seed: seed, tick: tick, time: clock(), rows: table.rows, overflow: table.overflow.count,
                      malformed: table.malformed, distance: distance, distanceEvery: distanceEvery)
    }
}

/// The shared state of `NetworkWatch.parallelMap`'s workers (behind `lock`).
private final class ParallelResults<T>: @unchecked Sendable {
    let lock = NSLock()
    var values: [T?]
    var next = 0
    init(_ n: Int) { values = Array(repeating: nil, count: n) }
}

/// What one tick shows.
public struct WatchSnapshot: Sendable {
    public var seed: String
    public var tick: Int
    public var time: Date
    public var rows: [WatchedNode]
    public var overflow: Int
    public var malformed: Int
    public var distance: WatchDistance?
    public var distanceEvery: Int

    public init(seed: String, tick: Int, time: Date, rows: [WatchedNode], overflow: Int = 0, malformed: Int = 0,
                distance: WatchDistance? = nil, distanceEvery: Int = 5) {
        self.seed = seed
        self.tick = tick
        self.time = time
        self.rows = rows
        self.overflow = overflow
        self.malformed = malformed
        self.distance = distance
        self.distanceEvery = distanceEvery
    }
}

/// Text and JSON for `gossipctl watch`.
public enum WatchRender {
    /// ANSI: clear the screen and move the cursor home (only written to a terminal).
    public static let clearScreen = "\u{1B}[H\u{1B}[2J"

    /// `s` with control characters (C0, DEL, C1) replaced by `?`, cut to `max` characters.
    public static func sanitize(_ s: String, max: Int = WatchTable.maxFieldLength) -> String {
        var out = String.UnicodeScalarView()
        for u in s.unicodeScalars.prefix(max) {
            out.append(u.value < 0x20 || (0x7F...0x9F).contains(u.value) ? "?" : u)
        }
        return String(out) + (s.unicodeScalars.count > max ? "…" : "")
    }

    static func bytes(_ n: Int) -> String {
        let d = Double(n)
        if d < 1e3 { return "\(n) B" }
        if d < 1e6 { return String(format: "%.1f kB", d / 1e3) }
        if d < 1e9 { return String(format: "%.1f MB", d / 1e6) }
        return String(format: "%.2f GB", d / 1e9)
    }

    static func ago(_ from: Date?, _ now: Date) -> String {
        guard let from else { return "never" }
        return "\(max(0, Int(now.timeIntervalSince(from).rounded(.down))))s"
    }

    static func clock(_ d: Date) -> String {
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.timeZone = TimeZone(identifier: "UTC")
        f.dateFormat = "HH:mm:ss"
        return f.string(from: d)
    }

    static func iso(_ d: Date) -> String {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return f.string(from: d)
    }

    /// The block of one tick: a title line, a header, one row per node, and the footer with
    /// the distance. Columns are padded to their widest cell.
    public static func text(_ s: WatchSnapshot) -> [String] {
        let up = s.rows.filter(\.up).count
        var lines = ["gossip network via \(s.seed): tick \(s.tick) at \(clock(s.time)) UTC, \(s.rows.count) nodes, \(up) up, \(s.rows.count - up) down"]
        var cells: [[String]] = [["ENDPOINT", "ROLE", "PHASE", "ROUND", "LOSS", "ACCURACY", "EXCH OK/FAIL", "IN", "OUT", "LAST SEEN"]]
        for n in s.rows {
            let st = n.status
            let isPeer = st?.role == "peer"
            cells.append([
                sanitize(n.endpoint, max: 64),
                st.map { sanitize($0.role) } ?? "?",
                st.map { $0.phase.isEmpty ? "-" : sanitize($0.phase) } ?? "-",
                isPeer ? "\(st!.round)" : "-",
                isPeer ? (st!.loss.map { String(format: "%.4f", $0) } ?? "-") : "-",
                isPeer ? (st!.accuracy.map { String(format: "%.2f%%", $0 * 100) } ?? "-") : "-",
                isPeer ? "\(st!.exchanges.done)/\(st!.exchanges.failed)" : "-",
                st.map { bytes($0.bytesIn) } ?? "-",
                st.map { bytes($0.bytesOut) } ?? "-",
                n.up ? "\(ago(n.lastSeen, s.time)) ago" : (n.polls == 0 ? "new" : n.lastSeen.map { "DOWN \(ago($0, s.time))" } ?? "DOWN never seen"),
            ])
        }
        let widths = (0..<cells[0].count).map { c in cells.map { $0[c].count }.max() ?? 0 }
        for row in cells {
            lines.append(zip(row, widths).enumerated().map { i, p in
                i == row.count - 1 ? p.0 : p.0.padding(toLength: p.1, withPad: " ", startingAt: 0)
            }.joined(separator: "  "))
        }
        if let d = s.distance {
            lines.append(String(format: "max pairwise distance %.6f", d.value)
                         + " (relative L2 over \(d.peers) peers, schema \(d.schemaHash)\(d.skipped > 0 ? ", \(d.skipped) skipped" : ""))"
                         + " at \(clock(d.computedAt)) UTC (tick \(d.tick), \(ago(d.computedAt, s.time)) ago)")
        } else if s.distanceEvery == 0 {
            lines.append("max pairwise distance: off (--distance-every 0)")
        } else {
            lines.append("max pairwise distance: not known (needs two peers of one schema answering GetModel)")
        }
        if s.overflow > 0 { lines.append("\(s.overflow) more endpoints learned but not watched (--max-nodes)") }
        if s.malformed > 0 { lines.append("\(s.malformed) peer-list entries ignored: not HOST:PORT") }
        return lines
    }

    /// One JSON object for the tick (one line): `tick`, `time`, `seed`, `nodes` (each:
    /// `endpoint`, `up`, `role`, `phase`, `round`, `loss`, `accuracy`, `exchanges_ok`,
    /// `exchanges_failed`, `bytes_in`, `bytes_out`, `last_seen_seconds` (null: never),
    /// `error`), `distance` (null or `max_relative_l2`, `peers`, `skipped`, `schema_hash`,
    /// `computed_at`, `tick`), `overflow`, `malformed`.
    public static func json(_ s: WatchSnapshot) -> String {
        let null = NSNull()
        let nodes: [[String: Any]] = s.rows.map { n in
            let st = n.status
            func num(_ v: Double?) -> Any { v.flatMap { $0.isFinite ? $0 : nil } ?? null }
            return [
                "endpoint": n.endpoint, "up": n.up,
                "role": st?.role ?? null, "phase": st?.phase ?? null,
                "round": st.map { $0.round } ?? null, "loss": num(st?.loss), "accuracy": num(st?.accuracy),
                "exchanges_ok": st.map { $0.exchanges.done } ?? null, "exchanges_failed": st.map { $0.exchanges.failed } ?? null,
                "bytes_in": st.map { $0.bytesIn } ?? null, "bytes_out": st.map { $0.bytesOut } ?? null,
                "last_seen_seconds": n.lastSeen.map { max(0, s.time.timeIntervalSince($0)) } ?? null,
                "error": n.error ?? null,
            ]
        }
        let distance: Any = s.distance.map { d -> [String: Any] in
            ["max_relative_l2": d.value.isFinite ? d.value : null, "peers": d.peers, "skipped": d.skipped,
             "schema_hash": d.schemaHash, "computed_at": iso(d.computedAt), "tick": d.tick]
        } ?? null
        return jsonText(["tick": s.tick, "time": iso(s.time), "seed": s.seed, "nodes": nodes, "distance": distance,
                         "overflow": s.overflow, "malformed": s.malformed])
    }
}

extension NetworkWatch {
    /// A watch over the real network: Status and GetModel through one RPC client (encrypted
    /// when it was made with a `ChannelSecurity`). `statusTimeout` bounds each Status poll (a
    /// node slower than that is shown down for this tick: the view never stalls longer);
    /// `timeout` bounds each GetModel.
    public static func live(seed: String, client: RPCClient, statusTimeout: Duration, timeout: Duration, maxNodes: Int, parallel: Int,
                            distanceEvery: Int) throws(WatchPollError) -> NetworkWatch {
        try NetworkWatch(seed: seed, maxNodes: maxNodes, parallel: parallel, distanceEvery: distanceEvery,
            fetchStatus: { e in
                guard let ep = try? Endpoint(parsing: e) else { return .failure(WatchPollError("not HOST:PORT")) }
                switch callSync(client, ep, .status, ByteSlice(ByteStorage(count: 0)), deadline: statusTimeout) {
                case .failure(let err): return .failure(WatchPollError("\(err.code.name): \(err.message)"))
                case .success(let m):
                    do {
                        return .success(try StatusReport.parse(try WireCodec.decodeStatusReply(m.payload).json))
                    } catch {
                        return .failure(WatchPollError("unreadable status: \(error)"))
                    }
                }
            },
            fetchModel: { e in
                guard let ep = try? Endpoint(parsing: e),
                      case .success(let m) = callSync(client, ep, .getModel, try! WireCodec.encode(GetModelRequest(schemaHash: 0)), deadline: timeout),
                      let (_, p, _) = try? WireCodec.decodeModel(m.payload, expected: nil) else { return nil }
                return p
            })
    }
}
