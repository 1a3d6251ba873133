// Test harness for hosts in Linux network namespaces: a lab of N hosts, each its own network
// namespace `gsp<pid>-<lab>-<i>` with `lo` up and one interface `eth0` (10.A.B.(i+1)/24, A.B
// from this process's pid, and a multicast route 224.0.0.0/4 on eth0), all plugged by veth
// pairs into a bridge in a "switch" namespace `gsp<pid>-<lab>-s` (nothing is created in the
// root namespace, so parallel runs and other tests cannot collide with it). Real `gossipd`
// processes run in the hosts through `ip netns exec`; the test reaches them over their Unix
// control sockets (a path in the file system, shared by all network namespaces).
//
// A partition moves some hosts' ports onto a second bridge in the switch namespace, so the
// two groups share no link (each side keeps its own broadcast and multicast domain); healing
// moves them back. (This machine has no iptables/nft and no netem; this needs only `ip`.)
//
// Cleanup in every outcome: `shutdown()` (also run by deinit) kills every process the lab
// started, by pid, then deletes its namespaces (deleting the switch namespace deletes the
// bridges and veth ends). At the first use in a process, namespaces `gsp<PID>-...` whose PID
// is no longer alive (left by a test run that was killed) are swept: their processes killed
// (`ip netns pids`), the namespaces deleted.
//
// Where namespaces cannot be made (not root, no `ip`, `ip netns add` refused), `available` is
// false with `unavailableReason` saying why; tests use `.enabled(if:)` so they skip with it.
import Foundation
import GossipML
import GossipNet
@testable import GossipNode
import GossipSecure
import GossipWire

/// A set of network-namespaced hosts on one switch, owned by one test.
final class NetNamespaceLab: @unchecked Sendable {
    /// The `ip` executable, or nil.
    static let ipPath: String? = ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"].first { FileManager.default.isExecutableFile(atPath: $0) }

    /// Why namespaces cannot be made here (nil: they can). Checked once per process, by making
    /// and deleting a probe namespace; sweeps stale namespaces of dead test runs first.
    static let unavailableReason: String? = {
        guard geteuid() == 0 else { return "network namespace tests need root (ip netns add); skipped" }
        guard ipPath != nil else { return "no `ip` executable (iproute2) found; network namespace tests skipped" }
        sweepStale()
        let probe = "gsp\(getpid())-probe"
        let (rc, _, err) = ip(["netns", "add", probe])
        defer { _ = ip(["netns", "del", probe]) }
        guard rc == 0 else { return "`ip netns add` failed (\(err.trimmingCharacters(in: .whitespacesAndNewlines))); network namespace tests skipped" }
        let (brc, _, berr) = ip(["-n", probe, "link", "add", "gspprobe", "type", "bridge"])
        guard brc == 0 else { return "cannot make a bridge in a namespace (\(berr.trimmingCharacters(in: .whitespacesAndNewlines))); network namespace tests skipped" }
        return nil
    }()
    static var available: Bool { unavailableReason == nil }

    private static let labCounter = Mutexed(0)

    let hosts: Int
    let dir: String
    /// Namespace names of the hosts, and of the switch.
    let hostNamespaces: [String]
    let switchNamespace: String
    /// Host i's address (no port).
    let addresses: [String]
    /// The network key every node gets (`--network-key`): the hosts' addresses are not loopback.
    let networkKeyFile: String
    /// False: nodes run plaintext with `--insecure` instead of the key (the lab's hosts are
    /// reachable only from each other).
    let secure: Bool
    private let lock = NSLock()
    private var processes: [Process] = []
    private var created: [String] = []
    private var isShutDown = false
    /// Hosts whose port is on the second bridge (partitioned from the others).
    private(set) var partitioned: Set<Int> = []

    /// Makes `hosts` namespaces on one switch.
    /// - Throws: `TimedOut`-style errors naming the `ip` command that failed (the lab is
    ///   cleaned up first).
    init(_ name: String, hosts: Int, secure: Bool = true) throws {
        self.secure = secure
        precondition(hosts >= 1 && hosts <= 250)
        let lab = NetNamespaceLab.labCounter.withLock { v -> Int in v += 1; return v }
        let pid = Int(getpid())
        self.hosts = hosts
        dir = NSTemporaryDirectory() + "gossip-netns-\(name)-\(pid)-\(lab)"
        try? FileManager.default.removeItem(atPath: dir)
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let prefix = "gsp\(pid)-\(lab)"
        hostNamespaces = (0..<hosts).map { "\(prefix)-\($0)" }
        switchNamespace = "\(prefix)-s"
        let net = "10.\((pid >> 8) & 0xff).\(pid & 0xff)"
        addresses = (0..<hosts).map { "\(net).\($0 + 1)" }
        let key = NetworkKey.generate()
        networkKeyFile = dir + "/network.key"
        try key.write(to: networkKeyFile)
        do {
            try build()
        } catch {
            shutdown()
            throw error
        }
    }

    deinit { shutdown() }

    private func run(_ args: [String]) throws {
        let (rc, _, err) = NetNamespaceLab.ip(args)
        guard rc == 0 else {
            throw LabError(description: "`ip \(args.joined(separator: " "))` failed (exit \(rc)): \(err.trimmingCharacters(in: .whitespacesAndNewlines))")
        }
    }

    private func build() throws {
        try run(["netns", "add", switchNamespace])
        lock.withLock { created.append(switchNamespace) }
        let sw = switchNamespace
        for b in ["br0", "br1"] {
            // No IGMP snooping: with no querier on the segment, snooping could stop forwarding
            // a group once its reports age out.
            try run(["-n", sw, "link", "add", b, "type", "bridge", "mcast_snooping", "0"])
            try run(["-n", sw, "link", "set", b, "up"])
        }
        for i in 0..<hosts {
            let ns = hostNamespaces[i]
            try run(["netns", "add", ns])
            lock.withLock { created.append(ns) }
            try run(["-n", sw, "link", "add", "p\(i)", "type", "veth", "peer", "name", "eth0", "netns", ns])
            try run(["-n", sw, "link", "set", "p\(i)", "master", "br0"])
            try run(["-n", sw, "link", "set", "p\(i)", "up"])
            try run(["-n", ns, "link", "set", "lo", "up"])
            try run(["-n", ns, "addr", "add", "\(addresses[i])/24", "dev", "eth0"])
            try run(["-n", ns, "link", "set", "eth0", "up"])
            try run(["-n", ns, "route", "add", "224.0.0.0/4", "dev", "eth0"])
        }
    }

    /// Cuts `group` off from the other hosts (their ports move to the second bridge).
    func partition(_ group: [Int]) throws {
        for i in group {
            try run(["-n", switchNamespace, "link", "set", "p\(i)", "master", "br1"])
            partitioned.insert(i)
        }
    }

    /// Puts every host back on one bridge.
    func heal() throws {
        for i in partitioned.sorted() {
            try run(["-n", switchNamespace, "link", "set", "p\(i)", "master", "br0"])
        }
        partitioned = []
    }

    /// A gossipd started in host `host`, reached over its control socket.
    final class Node: @unchecked Sendable {
        let host: Int
        let process: Process
        let endpoint: String
        let log: String
        let name: String
        let controlSocket: String
        init(host: Int, process: Process, endpoint: String, log: String, name: String, controlSocket: String) {
            self.host = host
            self.process = process
            self.endpoint = endpoint
            self.log = log
            self.name = name
            self.controlSocket = controlSocket
        }
        var logTail: String {
            ((try? String(contentsOfFile: log, encoding: .utf8)) ?? "").split(separator: "\n").suffix(15).joined(separator: "\n")
        }
        func status() throws -> StatusReport {
            try Control(socketPath: controlSocket, timeout: .seconds(10)).status()
        }
        /// The node's current model (exported over the control socket).
        func model(into dir: String) throws -> ParameterSet {
            let path = "\(dir)/\(name)-\(UInt32.random(in: 0...UInt32.max)).safetensors"
            defer { try? FileManager.default.removeItem(atPath: path) }
            _ = try Control(socketPath: controlSocket, timeout: .seconds(10)).exportModel(to: path)
            return try SafeTensors.read(path: path).parameters
        }
    }

    /// Starts `ip netns exec HOST gossipd ARGS` with a control socket, the network key, a
    /// ready file and `--exit-with-parent`, and waits until the ready file names the endpoint.
    func start(host: Int, _ args: [String], timeout: Double = 120) throws -> Node {
        let name = "h\(host)-\(args.first ?? "node")"
        let log = "\(dir)/\(name).log", ready = "\(dir)/\(name).ready", sock = "\(dir)/\(name).sock"
        try? FileManager.default.removeItem(atPath: ready)
        _ = FileManager.default.createFile(atPath: log, contents: nil)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: NetNamespaceLab.ipPath!)
        // `ip netns exec` execs the command in place: the pid is gossipd's own.
        p.arguments = ["netns", "exec", hostNamespaces[host], Cluster.binary("gossipd")] + args
            + ["--control-socket", sock, "--ready-file", ready, "--exit-with-parent"]
            + (secure ? ["--network-key", networkKeyFile] : ["--insecure"])
        let fh = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        defer { try? fh.close() }
        p.standardOutput = fh
        p.standardError = fh
        p.standardInput = FileHandle.nullDevice
        try lock.withLock {
            guard !isShutDown else { throw LabError(description: "the lab is shut down") }
            try p.run()
            processes.append(p)
        }
        let until = Date().addingTimeInterval(timeout)
        while Date() < until {
            if let s = try? String(contentsOfFile: ready, encoding: .utf8), s.hasSuffix("\n") {
                return Node(host: host, process: p, endpoint: s.trimmingCharacters(in: .whitespacesAndNewlines),
                            log: log, name: name, controlSocket: sock)
            }
            if !p.isRunning {
                throw LabError(description: "\(name) exited (\(p.terminationStatus)) before ready:\n\((try? String(contentsOfFile: log, encoding: .utf8)) ?? "")")
            }
            Thread.sleep(forTimeInterval: 0.05)
        }
        throw LabError(description: "\(name) not ready within \(timeout) s:\n\((try? String(contentsOfFile: log, encoding: .utf8)) ?? "")")
    }

    /// Writes an initial model (architecture `arch`, seed `seed`) as the checkpoint of state
    /// directory `stateDir`, so a peer started with it needs neither a bootstrap nor --join.
    func seedStateDir(_ stateDir: String, arch: String, seed: UInt64 = 1) throws {
        try FileManager.default.createDirectory(atPath: stateDir, withIntermediateDirectories: true)
        let a = try MLPArchitecture(parsing: arch)
        try SafeTensors.write(a.makeParameters(seed: seed), metadata: ["arch": a.description], to: stateDir + "/model.safetensors")
    }

    /// Largest pairwise relative L2 distance between the nodes' models.
    func spread(_ nodes: [Node]) throws -> Double {
        let models = try nodes.map { try $0.model(into: dir) }
        var worst = 0.0
        for i in 0..<models.count { for j in (i + 1)..<models.count { worst = max(worst, Averaging.relativeL2Distance(models[i], models[j])) } }
        return worst
    }

    /// Kills every process (SIGCONT first, in case a test froze one), then deletes the
    /// namespaces and the lab's directory (GOSSIP_KEEP_TEST_DIRS=1 keeps the directory).
    func shutdown() {
        let (procs, names) = lock.withLock { () -> ([Process], [String]) in
            isShutDown = true
            let r = (processes, created)
            processes.removeAll()
            created.removeAll()
            return r
        }
        for p in procs where p.isRunning {
            kill(p.processIdentifier, SIGCONT)
            kill(p.processIdentifier, SIGKILL)
        }
        for p in procs { p.waitUntilExit() }
        // Hosts first (their veth ends go with them), then the switch.
        for ns in names.reversed() {
            NetNamespaceLab.killProcesses(in: ns)
            _ = NetNamespaceLab.ip(["netns", "del", ns])
        }
        if !names.isEmpty || !procs.isEmpty, ProcessInfo.processInfo.environment["GOSSIP_KEEP_TEST_DIRS"] == nil {
            try? FileManager.default.removeItem(atPath: dir)
        }
    }

    /// Deletes namespaces named `gsp<PID>-...` whose PID is not a live process (a killed test
    /// run's), killing what still runs in them first.
    static func sweepStale() {
        let (rc, out, _) = ip(["netns", "list"])
        guard rc == 0 else { return }
        for line in out.split(separator: "\n") {
            guard let name = line.split(separator: " ").first.map(String.init), name.hasPrefix("gsp") else { continue }
            let digits = name.dropFirst(3).prefix { $0.isNumber }
            guard let pid = Int32(digits), name.dropFirst(3 + digits.count).hasPrefix("-") else { continue }
            if pid == getpid() { continue }
            if kill(pid, 0) == 0 || errno == EPERM { continue }   // its owner still runs
            killProcesses(in: name)
            _ = ip(["netns", "del", name])
        }
    }

    /// SIGKILLs every process in namespace `ns`.
    static func killProcesses(in ns: String) {
        let (rc, out, _) = ip(["netns", "pids", ns])
        guard rc == 0 else { return }
        for p in out.split(whereSeparator: \.isWhitespace).compactMap({ Int32($0) }) where p > 1 && p != getpid() {
            kill(p, SIGKILL)
        }
    }

    /// Runs `ip ARGS`; (exit status, stdout, stderr).
    @discardableResult
    static func ip(_ args: [String]) -> (Int32, String, String) {
        guard let ipPath else { return (127, "", "no ip executable") }
        do {
            return try Cluster.run(ipPath, args, timeout: 30)
        } catch {
            return (1, "", "\(error)")
        }
    }
}

struct LabError: Error, CustomStringConvertible {
    let description: String
}

/// A value behind a lock (for static counters).
final class Mutexed<T>: @unchecked Sendable {
    private var value: T
    private let lock = NSLock()
    init(_ v: T) { value = v }
    func withLock<R>(_ body: (inout T) throws -> R) rethrows -> R {
        lock.lock()
        defer { lock.unlock() }
        return try body(&value)
    }
}
