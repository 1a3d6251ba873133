// `--metrics-listen` (issue 12, README "Metrics"): a real bootstrap and two real training peers
// serve Prometheus metrics; the test scrapes them over TCP, checks the exposition with a strict
// reader of the text format (PrometheusText) and, when Python's prometheus_client is there
// ($PYTHON or python3; .ci/run installs it into its venv), with that parser too, and checks
// that the counters move as the peers train. NodeMetrics is also checked alone, against a
// status it is given, so every metric's value is known.
import Foundation
import GossipNet
@testable import GossipNode
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// GET (or another request) to 127.0.0.1:port over a plain socket; returns status, headers, body.
private func httpGet(_ endpoint: Endpoint, path: String = "/metrics", method: String = "GET") throws -> (Int, [String: String], String) {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw TimedOut(description: "socket() failed: errno \(errno)") }
    defer { close(fd) }
    var tv = timeval(tv_sec: 10, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    var a = sockaddr_in()
    a.sin_family = sa_family_t(AF_INET)
    a.sin_port = endpoint.port.bigEndian
    a.sin_addr.s_addr = inet_addr(endpoint.host)
    let rc = withUnsafePointer(to: &a) { p in
        p.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard rc == 0 else { throw TimedOut(description: "cannot connect to the metrics endpoint \(endpoint): errno \(errno)") }
    let req = Array("\(method) \(path) HTTP/1.1\r\nHost: \(endpoint)\r\nAccept: text/plain\r\n\r\n".utf8)
    _ = req.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
    var data: [UInt8] = []
    var buf = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        if n <= 0 { break }
        data += buf[0..<n]
    }
    let text = String(decoding: data, as: UTF8.self)
    guard let sep = text.range(of: "\r\n\r\n") else { throw TimedOut(description: "no HTTP response from \(endpoint): \(text.prefix(200))") }
    let head = text[..<sep.lowerBound].components(separatedBy: "\r\n")
    let code = Int(head[0].split(separator: " ")[1]) ?? 0
    var headers: [String: String] = [:]
    for h in head.dropFirst() {
        if let c = h.firstIndex(of: ":") { headers[h[..<c].lowercased()] = h[h.index(after: c)...].trimmingCharacters(in: .whitespaces) }
    }
    let body = String(text[sep.upperBound...])
    if let len = headers["content-length"].flatMap(Int.init), method != "HEAD" {
        #expect(body.utf8.count == len, "Content-Length \(len) but \(body.utf8.count) bytes of body")
    }
    return (code, headers, body)
}

/// The metrics endpoint a node printed ("... metrics on http://HOST:PORT/metrics").
private func metricsEndpoint(_ node: NodeProcess, cluster: Cluster) throws -> Endpoint {
    var found: Endpoint?
    try cluster.wait("\(node.name) prints its metrics address", timeout: 30, nodes: [node]) {
        let log = (try? String(contentsOfFile: node.log, encoding: .utf8)) ?? ""
        guard let r = log.range(of: "metrics on http://") else { return false }
        let rest = log[r.upperBound...]
        guard let end = rest.range(of: "/metrics") else { return false }
        found = try Endpoint(parsing: String(rest[..<end.lowerBound]))
        return true
    }
    return found!
}

/// Parses `text` with Python's prometheus_client; returns the sample names it read, or nil
/// (with the reason printed) when that parser is not installed.
private func pythonSampleNames(_ text: String) throws -> Set<String>? {
    let python = ProcessInfo.processInfo.environment["PYTHON"] ?? "/usr/bin/env"
    let pre = ProcessInfo.processInfo.environment["PYTHON"] == nil ? ["python3"] : []
    let probe = try? Cluster.run(python, pre + ["-c", "import prometheus_client"], timeout: 60)
    guard let probe, probe.0 == 0 else {
        print("MetricsTests: Python's prometheus_client is not importable (set PYTHON to a python that has it; .ci/run installs it); the strict Swift check of the format still ran")
        return nil
    }
    let file = NSTemporaryDirectory() + "gossip-metrics-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).txt"
    try text.write(toFile: file, atomically: true, encoding: .utf8)
    defer { try? FileManager.default.removeItem(atPath: file) }
    let script = """
    import sys
    from prometheus_client.parser import text_string_to_metric_families
    for fam in text_string_to_metric_families(open(sys.argv[1]).read()):
        for s in fam.samples:
            print(fam.type, s.name, s.value)
    """
    let (rc, out, err) = try Cluster.run(python, pre + ["-c", script, file], timeout: 60)
    #expect(rc == 0, "prometheus_client refused the exposition: \(err)")
    return Set(out.split(separator: "\n").compactMap { $0.split(separator: " ").dropFirst().first.map(String.init) })
}

@Suite(.serialized) struct MetricsTests {
    @Test func scrapesARealNetworkAndCountersMove() throws {
        let cluster = try Cluster("metrics")
        defer { cluster.shutdown() }
        let listen = ["--metrics-listen", "127.0.0.1:0"]
        let boot = try cluster.start(["bootstrap", "--listen", "127.0.0.1:0", "--arch", "64,32,10", "--seed", "1", "--log-level", "info"] + listen)
        let a = try cluster.peer(["--bootstrap", boot.endpoint.description, "--pace-ms", "30"] + listen, shard: "0/2",
                                 stateDir: cluster.dir + "/a")
        let b = try cluster.peer(["--bootstrap", boot.endpoint.description, "--pace-ms", "30"] + listen, shard: "1/2")
        let nodes = [boot, a, b]
        let ma = try metricsEndpoint(a, cluster: cluster)
        let mb = try metricsEndpoint(b, cluster: cluster)
        let mboot = try metricsEndpoint(boot, cluster: cluster)

        func scrape(_ e: Endpoint) throws -> (PrometheusText, String) {
            let (code, headers, body) = try httpGet(e)
            #expect(code == 200)
            #expect(headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8")
            #expect(headers["connection"] == "close")
            do { return (try PrometheusText(body), body) } catch {
                Issue.record("the exposition of \(e) is not valid: \(error)\n\(body)")
                throw error
            }
        }

        // Wait until peer a has trained, evaluated, checkpointed and exchanged at least once.
        var first: PrometheusText?
        try cluster.wait("peer a reports rounds, an evaluation, an ok exchange and a checkpoint", timeout: 120, nodes: nodes) {
            let (m, _) = try scrape(ma)
            first = m
            return (m.value("gossip_rounds_total") ?? 0) >= 4 && m.value("gossip_heldout_accuracy") != nil
                && (m.value("gossip_exchanges_total", ["outcome": "ok", "status": "OK"]) ?? 0) >= 1
                && m.value("gossip_checkpoint_age_seconds") != nil
        }
        let m1 = first!
        // Every metric of the catalog a training peer has, with its documented type and help.
        let expected: [String: String] = [
            "gossip_rounds_total": "counter", "gossip_sgd_steps_total": "counter", "gossip_samples_total": "counter",
            "gossip_training_loss": "gauge", "gossip_heldout_accuracy": "gauge", "gossip_heldout_loss": "gauge",
            "gossip_exchanges_total": "counter", "gossip_exchange_duration_seconds": "histogram",
            "gossip_bytes_received_total": "counter", "gossip_bytes_sent_total": "counter",
            "gossip_consensus_distance": "gauge", "gossip_peers_known": "gauge", "gossip_peers_dropped_total": "counter",
            "gossip_checkpoint_age_seconds": "gauge", "gossip_models_rejected_total": "counter",
            "gossip_weight_capped_total": "counter", "gossip_exchanges_refused_total": "counter", "gossip_uptime_seconds": "gauge",
        ]
        for (name, type) in expected {
            #expect(m1.types[name] == type, "\(name): type \(m1.types[name] ?? "missing"), expected \(type)")
            #expect(m1.help[name] == MetricCatalog.help[name], "\(name): HELP text")
        }
        #expect(m1.value("gossip_peers_known") == 1)
        let acc = try #require(m1.value("gossip_heldout_accuracy"))
        #expect(acc > 0 && acc <= 1)
        #expect((m1.value("gossip_exchange_duration_seconds_count") ?? 0) >= 1)
        let distance = try #require(m1.value("gossip_consensus_distance"))
        #expect(distance >= 0 && distance.isFinite)
        // A push-sum mass only on push-sum peers.
        #expect(m1.types["gossip_push_sum_mass"] == nil)

        // Counters move: scrape again once a has done more rounds.
        let r1 = m1.value("gossip_rounds_total")!
        var second: (PrometheusText, String)?
        try cluster.wait("peer a's rounds counter moves past \(r1 + 3)", timeout: 120, nodes: nodes) {
            second = try scrape(ma)
            return (second!.0.value("gossip_rounds_total") ?? 0) >= r1 + 3
        }
        let (m2, text2) = second!
        for name in ["gossip_sgd_steps_total", "gossip_samples_total", "gossip_bytes_received_total", "gossip_bytes_sent_total",
                     "gossip_exchange_duration_seconds_count"] {
            #expect(m2.total(name) > m1.total(name), "\(name) did not move: \(m1.total(name)) then \(m2.total(name))")
        }
        #expect(m2.total("gossip_exchanges_total") > m1.total("gossip_exchanges_total"))
        // The status and the metrics agree (the metrics read the status; status runs ahead).
        let st = try cluster.status(a)
        #expect(st.metrics == "http://\(ma)/metrics", "status names the metrics endpoint")
        #expect(try cluster.status(boot).metrics == "http://\(mboot)/metrics")
        #expect(Double(st.round) >= m2.value("gossip_rounds_total")!)
        #expect(Double(st.step) >= m2.value("gossip_sgd_steps_total")!)

        // The same text through a real parser.
        if let names = try pythonSampleNames(text2) {
            for s in m2.samples { #expect(names.contains(s.name), "prometheus_client did not read \(s.name)") }
            #expect(names.contains("gossip_rounds_total") && names.contains("gossip_exchange_duration_seconds_bucket"))
        }

        // Peer b and the bootstrap.
        let (mb1, textB) = try scrape(mb)
        #expect((mb1.value("gossip_rounds_total") ?? 0) > 0)
        #expect(mb1.types["gossip_checkpoint_age_seconds"] == nil, "no --state-dir, no checkpoint")
        _ = try pythonSampleNames(textB)
        let (mbt, textBoot) = try scrape(mboot)
        #expect(mbt.value("gossip_bootstrap_peers_registered") == 2)
        #expect((mbt.value("gossip_uptime_seconds") ?? 0) > 0)
        #expect(mbt.types["gossip_rounds_total"] == nil)
        _ = try pythonSampleNames(textBoot)

        // HEAD, other paths and methods.
        let (hc, hh, hb) = try httpGet(ma, method: "HEAD")
        #expect(hc == 200 && hb.isEmpty && Int(hh["content-length"] ?? "") ?? 0 > 100)
        #expect(try httpGet(ma, path: "/").0 == 404)
        #expect(try httpGet(ma, method: "POST").0 == 405)
    }

    @Test func pushSumPeersExposeTheirMass() throws {
        let cluster = try Cluster("metrics-pushsum")
        defer { cluster.shutdown() }
        let boot = try cluster.bootstrap()
        var peers: [NodeProcess] = []
        for i in 0..<2 {
            peers.append(try cluster.peer(["--bootstrap", boot.endpoint.description, "--averaging", "push-sum", "--pace-ms", "30",
                                           "--metrics-listen", "127.0.0.1:0"], shard: "\(i)/2"))
        }
        let e = try metricsEndpoint(peers[0], cluster: cluster)
        var mass: Double?
        try cluster.wait("a push-sum peer exposes gossip_push_sum_mass after some rounds", timeout: 120, nodes: [boot] + peers) {
            let (code, _, body) = try httpGet(e)
            guard code == 200 else { return false }
            let t = try PrometheusText(body)
            #expect(t.types["gossip_push_sum_mass"] == "gauge")
            mass = t.value("gossip_push_sum_mass")
            return (t.value("gossip_rounds_total") ?? 0) >= 3 && mass != nil
        }
        // Half a mass travels per push: a peer's mass stays positive and finite.
        #expect(mass! > 0 && mass!.isFinite)
    }

    @Test func badMetricsListenIsAUsageError() throws {
        let (rc, _, err) = try Cluster.run(Cluster.binary("gossipd"), ["bootstrap", "--metrics-listen", "nonsense", "--arch", "64,32,10"], timeout: 60)
        #expect(rc == 64, "exit \(rc): \(err)")
        #expect(err.contains("--metrics-listen"))
    }

    @Test func nodeMetricsReflectStatusAndEvents() throws {
        final class Box: @unchecked Sendable {
            let lock = NSLock()
            var s = StatusReport(role: "peer", endpoint: "127.0.0.1:1", phase: "training", architecture: "64,32,10", schemaHash: 1)
        }
        let box = Box()
        let m = NodeMetrics(role: "peer") { box.lock.withLock { box.s } }
        box.lock.withLock {
            box.s.round = 7; box.s.step = 70; box.s.samplesSeen = 2240; box.s.loss = 0.5; box.s.accuracy = 0.75
            box.s.heldOutLoss = 0.6; box.s.peers = ["a", "b", "c"]; box.s.bytesIn = 1000; box.s.bytesOut = 2000
            box.s.rejected.modelsRejected = 2; box.s.rejected.weightCapped = 1; box.s.exchanges.refused = 4
            var p = StatusReport.PushSum(); p.mass = 0.25; box.s.pushSum = p
        }
        m.record(.exchange(round: 1, peer: "a", outcome: "ok", status: nil, distance: 0.125, seconds: 0.02))
        m.record(.exchange(round: 2, peer: "b", outcome: "failed", status: "UNAVAILABLE", distance: nil, seconds: 3))
        m.record(.exchange(round: 3, peer: "b", outcome: "failed", status: "UNAVAILABLE", distance: nil, seconds: 3))
        m.record(.membership(round: 3, known: 2, added: [], removed: ["b"]))
        // A flood of distinct odd statuses folds into one "other" series.
        for i in 0..<100 { m.record(.exchange(round: 4, peer: "x", outcome: "failed", status: "CODE_\(i)", distance: nil, seconds: 0.1)) }
        let t = try PrometheusText(String(decoding: m.exposition(), as: UTF8.self))
        #expect(t.value("gossip_rounds_total") == 7)
        #expect(t.value("gossip_sgd_steps_total") == 70)
        #expect(t.value("gossip_samples_total") == 2240)
        #expect(t.value("gossip_training_loss") == 0.5)
        #expect(t.value("gossip_heldout_accuracy") == 0.75)
        #expect(t.value("gossip_heldout_loss") == 0.6)
        #expect(t.value("gossip_peers_known") == 3)
        #expect(t.value("gossip_bytes_received_total") == 1000)
        #expect(t.value("gossip_bytes_sent_total") == 2000)
        #expect(t.value("gossip_models_rejected_total") == 2)
        #expect(t.value("gossip_weight_capped_total") == 1)
        #expect(t.value("gossip_exchanges_refused_total") == 4)
        #expect(t.value("gossip_push_sum_mass") == 0.25)
        #expect(t.value("gossip_consensus_distance") == 0.125)
        #expect(t.value("gossip_peers_dropped_total") == 1)
        #expect(t.value("gossip_exchanges_total", ["outcome": "ok", "status": "OK"]) == 1)
        #expect(t.value("gossip_exchanges_total", ["outcome": "failed", "status": "UNAVAILABLE"]) == 2)
        let series = t.samples.filter { $0.name == "gossip_exchanges_total" }
        #expect(series.count <= NodeMetrics.maxExchangeSeries + 1, "label pairs bounded: \(series.count)")
        #expect(t.total("gossip_exchanges_total") == 103)
        #expect(t.value("gossip_exchange_duration_seconds_count") == 103)
        #expect(t.value("gossip_exchange_duration_seconds_bucket", ["le": "0.025"]) == 1)
        #expect(t.types["gossip_checkpoint_age_seconds"] == nil)
        // Status counters are mirrored, not added twice; a second scrape after more rounds moves them.
        box.lock.withLock { box.s.round = 9; box.s.step = 90 }
        let t2 = try PrometheusText(String(decoding: m.exposition(), as: UTF8.self))
        #expect(t2.value("gossip_rounds_total") == 9)
        #expect(t2.value("gossip_sgd_steps_total") == 90)
        #expect(t2.value("gossip_bytes_received_total") == 1000)
    }
}

/// The strict reader refuses what is not the text format (so the checks above cannot pass vacuously).
@Suite struct PrometheusTextTests {
    @Test func refusesMalformedExpositions() {
        let good = "# HELP a_total x\n# TYPE a_total counter\na_total{k=\"v\"} 1\n"
        #expect((try? PrometheusText(good))?.value("a_total", ["k": "v"]) == 1)
        let bad = [
            "a_total 1\n",                                                  // no TYPE
            "# TYPE a_total counter\na_total 1",                            // no final newline
            "# TYPE a_total counter\na_total one\n",                        // not a float
            "# TYPE a_total counter\na_total{k=v} 1\n",                     // unquoted label
            "# TYPE a_total counter\na_total{k=\"v} 1\n",                   // unterminated
            "# TYPE a_total counter\na_total{1k=\"v\"} 1\n",                // bad label name
            "# TYPE a_total counter\n1a_total 1\n",                         // bad metric name
            "# TYPE a_total counter\na_total 1\na_total 2\n",               // same series twice
            "# TYPE a_total counter\na_total -1\n",                         // counter below 0
            "# TYPE a_total counting\na_total 1\n",                         // unknown type
            "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",  // decreasing
            "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 2\n",  // count differs
            "# TYPE a gauge\n\na 1\n",                                      // empty line
            "# random comment here\n",
        ]
        for b in bad { #expect(throws: PrometheusText.Violation.self, "\(b.debugDescription)") { try PrometheusText(b) } }
    }
}
