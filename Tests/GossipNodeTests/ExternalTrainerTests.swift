// External trainers (SPEC §5.12) against real in-process nodes on 127.0.0.1: two
// `--trainer external` peers onboarded from a bootstrap that serves an external model (a
// table that is no MLP), driven over their control sockets. The arithmetic test fixes one
// exchange between a pull and its push and checks that the node keeps both contributions.
import Foundation
import GossipML
import GossipNet
@testable import GossipNode
import GossipWire
import Logging
import Synchronization
import Testing

/// Two external peers and their bootstrap; no automatic averaging (the interval is an hour),
/// so the test decides every exchange.
private final class ExternalPair: @unchecked Sendable {
    let bootstrap: BootstrapNode
    let nodes: [PeerNode]
    let sockets: [String]
    private let finished = DispatchSemaphore(value: 0)

    init(table: [(name: String, shape: [Int])], initial: [Float]) throws {
        let quiet = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })
        let arch = try MLPArchitecture(external: table)
        let params = try ParameterSet(specs: table, storage: initial)
        bootstrap = try BootstrapNode(config: BootstrapConfig(listen: Endpoint(host: "127.0.0.1", port: 0), architecture: arch,
                                                              initialModel: params), logger: quiet)
        let boot = try bootstrap.start()
        var nodes: [PeerNode] = [], sockets: [String] = []
        for i in 0..<2 {
            var config = PeerConfig(listen: Endpoint(host: "127.0.0.1", port: 0))
            config.bootstrap = boot
            config.trainer = .external
            config.averagingInterval = .seconds(3600)
            config.exchangeTimeout = .seconds(5)
            let socket = testSocketPath("ext\(i)")
            config.security.controlSocket = socket
            let node = try PeerNode(config: config, logger: quiet)
            _ = try node.start()
            let done = finished
            Thread { _ = try? node.run(); done.signal() }.start()
            _ = waitUntil("external peer \(i) to onboard") { node.status().phase == "training" }
            nodes.append(node)
            sockets.append(socket)
        }
        self.nodes = nodes
        self.sockets = sockets
    }

    /// Pulls inline over node `i`'s control socket: (version, weights in table order).
    func pull(_ i: Int) throws -> (UInt64, [Float]) {
        let m = try controlCall(sockets[i], .modelPull, try ModelPullRequest(path: "").encode().array).get()
        let reply = try ModelPullReply.decode(m.payload)
        guard case .inline(let model) = reply.body else { throw NodeError("expected an inline model") }
        var out = [Float](repeating: 0, count: model.data.count / 4)
        try model.copyData(into: &out)
        return (reply.version, out)
    }

    /// Pushes `weights` (table order, names of `table`) based on `version` to node `i`.
    func push(_ i: Int, _ weights: [Float], table: [(name: String, shape: [Int])], version: UInt64,
              samples: UInt64) -> Result<ModelPushReply, RPCError> {
        let t = TensorTable(tensors: table.map { TensorInfo(name: $0.name, shape: $0.shape) })
        let data = weights.withUnsafeBytes { ByteSlice(ByteStorage(copying: $0)) }
        let model = ModelState(architecture: "", round: 0, step: 0, samples: 0, table: t, data: data)
        let payload = try! ModelPushRequest(baseVersion: version, samples: samples, steps: 1, path: "", model: model).encode().array
        return controlCall(sockets[i], .modelPush, payload).flatMap { m in
            Result { try ModelPushReply.decode(m.payload) }.mapError { RPCError(.internal, "\($0)") }
        }
    }

    func stop() {
        for n in nodes { n.requestStop() }
        for _ in nodes { #expect(finished.wait(timeout: .now() + 30) == .success, "an external peer did not stop within 30 s") }
        bootstrap.requestStop()
        bootstrap.wait()
    }
}

@Suite(.serialized) struct ExternalTrainerTests {
    /// A table that is no MLP: names and shapes as a convolutional net would have them.
    static let table: [(name: String, shape: [Int])] = [("conv.weight", [2, 1, 2, 2]), ("conv.bias", [2]), ("fc.weight", [3, 2])]
    static let initial: [Float] = (0..<16).map { Float($0 % 7) * 0.25 - 0.5 }

    /// SPEC §5.12: pull (version v) -> an exchange changes the model -> push based on v. The
    /// node ends at pulled + exchange's change + trained change: both contributions kept.
    @Test func aPushKeepsTheAveragingDoneMeanwhile() throws {
        let pair = try ExternalPair(table: Self.table, initial: Self.initial)
        defer { pair.stop() }
        let m = Self.initial
        // Node 0's trainer pulls version v1 and trains (d1) while the network averages.
        let (v1, pulled) = try pair.pull(0)
        #expect(pulled == m, "both peers start with the bootstrap's external model")
        let d1: [Float] = (0..<16).map { Float($0) * 0.01 - 0.05 }
        // Node 1 gets its own training (d2, 1 sample: weight 1, as node 0's before any push).
        let (v2, _) = try pair.pull(1)
        let d2: [Float] = (0..<16).map { Float(15 - $0) * 0.02 }
        _ = try pair.push(1, zip(m, d2).map { $0 + $1 }, table: Self.table, version: v2, samples: 1).get()
        // The fixed exchange: node 0 with node 1, equal weights: both at m + d2/2.
        let result = try Control(socketPath: pair.sockets[0], timeout: .seconds(20)).gossip(with: pair.nodes[1].endpoint.description)
        #expect(result.relativeL2Change > 0)
        let (afterExchange, mid) = try pair.pull(0)
        #expect(afterExchange != v1, "an exchange that changed the model gives a new version")
        for k in 0..<16 { #expect(abs(mid[k] - (m[k] + d2[k] / 2)) < 1e-5, "exchange result at \(k)") }
        // Node 0's trainer pushes m + d1 based on v1: the node applies d1 to m + d2/2.
        let reply = try pair.push(0, zip(m, d1).map { $0 + $1 }, table: Self.table, version: v1, samples: 128).get()
        let (v3, final) = try pair.pull(0)
        #expect(v3 == reply.version, "the pull after a push sees the push's version")
        for k in 0..<16 {
            let want = m[k] + d2[k] / 2 + d1[k]
            #expect(abs(final[k] - want) < 1e-5, "element \(k): \(final[k]), want pulled + exchange + trained = \(want)")
        }
        let s = pair.nodes[0].status()
        #expect(s.trainer == "external" && s.external?.pushes == 1 && s.external?.weight == 128 && s.samplesSeen == 128)
        #expect(s.architecture == "external")
    }

    /// Refused pushes change nothing: an unknown version, another table, NaN; and off the
    /// control socket, PERMISSION_DENIED.
    @Test func refusedPushesChangeNothing() throws {
        let pair = try ExternalPair(table: Self.table, initial: Self.initial)
        defer { pair.stop() }
        let (v, m) = try pair.pull(0)
        func code(_ r: Result<ModelPushReply, RPCError>) -> StatusCode? {
            if case .failure(let e) = r { return e.code } else { return nil }
        }
        let unknown = pair.push(0, m, table: Self.table, version: v &+ 1000, samples: 1)
        #expect(code(unknown) == .failedPrecondition)
        if case .failure(let e) = unknown { #expect(e.message.contains("unknown or too old") && e.message.contains("pull again"), "\(e.message)") }
        let other: [(name: String, shape: [Int])] = [("conv.weight", [2, 1, 2, 2]), ("conv.bias", [2]), ("fc.weight", [2, 3])]
        #expect(code(pair.push(0, m, table: other, version: v, samples: 1)) == .failedPrecondition)
        var bad = m
        bad[3] = .nan
        #expect(code(pair.push(0, bad, table: Self.table, version: v, samples: 1)) == .invalidArgument)
        let (again, same) = try pair.pull(0)
        #expect(again == v && same == m, "refused pushes left the model and its version as they were")
        #expect(pair.nodes[0].status().external?.pushesRefused == 3)
        // Over TCP, without an admin key: PERMISSION_DENIED, for pull and push alike.
        let client = RPCClient()
        defer { client.close() }
        let r = callSync(client, pair.nodes[0].endpoint, .modelPull, try ModelPullRequest(path: "").encode(), deadline: .seconds(10))
        if case .failure(let e) = r { #expect(e.code == .permissionDenied, "\(e)") } else { Issue.record("a pull over TCP was served") }
        // Only the last 4 versions are kept: after 5 more pushes, v is too old.
        var base = v
        for k in 0..<5 {
            var w = try pair.pull(0).1
            w[0] += Float(k + 1) * 0.01
            base = try pair.push(0, w, table: Self.table, version: try pair.pull(0).0, samples: 1).get().version
        }
        #expect(base != v)
        #expect(code(pair.push(0, m, table: Self.table, version: v, samples: 1)) == .failedPrecondition)
    }

    /// A file path: the node writes the pull and reads the push itself (SPEC §5.12).
    @Test func pullAndPushThroughFiles() throws {
        let pair = try ExternalPair(table: Self.table, initial: Self.initial)
        defer { pair.stop() }
        let dir = NSTemporaryDirectory() + "gossip-ext-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let c = Control(socketPath: pair.sockets[0], timeout: .seconds(20))
        let pulled = try c.pull(to: dir + "/m.safetensors")
        #expect(!pulled.inline && pulled.bytes > 64)
        // The file's tensors, in the model's table order, by name (a writer may order them otherwise).
        func inTableOrder(_ p: ParameterSet) -> [Float] {
            let byName = Dictionary(uniqueKeysWithValues: p.specs.map { ($0.name, Array(p.storage[$0.range])) })
            return Self.table.flatMap { byName[$0.name] ?? [] }
        }
        let (params, meta) = try SafeTensors.read(path: dir + "/m.safetensors")
        #expect(inTableOrder(params) == Self.initial && meta["arch"] == "external" && meta["version"] == "\(pulled.version)")
        // Written in another tensor order than the table's (by name, as safetensors.torch.save_file does).
        var want = Self.initial
        want[0] += 1   // conv.weight[0]
        let reordered = try ParameterSet(specs: [("conv.bias", [2]), ("conv.weight", [2, 1, 2, 2]), ("fc.weight", [3, 2])],
                                         storage: Array(want[8..<10]) + Array(want[0..<8]) + Array(want[10...]))
        try SafeTensors.write(reordered, metadata: [:], to: dir + "/t.safetensors")
        let pushed = try c.push(from: dir + "/t.safetensors", version: pulled.version, samples: 64)
        #expect(pushed.relativeL2Change > 0)
        let (_, now) = try pair.pull(0)
        #expect(now == want)
        // The same through the connection (--inline).
        let inline = try c.pull(to: dir + "/i.safetensors", inline: true)
        let copied = inTableOrder(try SafeTensors.read(path: dir + "/i.safetensors").parameters)
        #expect(inline.inline && copied == want)
    }
}
