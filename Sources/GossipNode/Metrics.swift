// A node's metrics in the Prometheus text format (issue 12, README "Metrics"). Metrics are
// recorded through swift-metrics (Counter, Gauge, Timer) into a PrometheusCollectorRegistry
// this object owns (one per node, no global MetricsSystem.bootstrap), and the exposition is
// written by swift-prometheus. Two sources feed it: telemetry events (exchange outcomes and
// durations, the last consensus distance, dropped peers) as they happen, and the node's
// `StatusReport` at each scrape (rounds, steps, bytes, losses, ...: counters already kept by
// the node are read, never counted twice). `MetricsEndpoint` serves it over GossipNet's
// HTTPResponder.
import CoreMetrics
import Foundation
import GossipNet
import Prometheus
import Synchronization

/// The media type of the Prometheus text exposition format.
public let prometheusContentType = "text/plain; version=0.0.4; charset=utf-8"

/// Every metric a node exposes: name, type and meaning (README "Metrics" lists the same).
public enum MetricCatalog {
    public static let help: [String: String] = [
        "gossip_rounds_total": "Training rounds this peer finished.",
        "gossip_sgd_steps_total": "SGD steps this peer took.",
        "gossip_samples_total": "Training samples this peer processed.",
        "gossip_training_loss": "Mean training loss of the last round.",
        "gossip_heldout_accuracy": "Accuracy on the held-out split at the last evaluation (0..1).",
        "gossip_heldout_loss": "Loss on the held-out split at the last evaluation.",
        "gossip_exchanges_total": "Exchanges this peer started, by outcome (ok, local_busy, remote_busy, failed) and wire status.",
        "gossip_exchanges_refused_total": "Exchanges offered to this peer that it did not apply (busy, onboarding, stopping, refused).",
        "gossip_exchange_duration_seconds": "Duration of the exchanges this peer started, reservation included, in seconds.",
        "gossip_bytes_received_total": "Bytes received on the node's connections.",
        "gossip_bytes_sent_total": "Bytes sent on the node's connections.",
        "gossip_consensus_distance": "Relative L2 distance between the two models before averaging, at the last ok exchange.",
        "gossip_peers_known": "Peers this node knows now.",
        "gossip_peers_dropped_total": "Peers removed from this peer's membership table.",
        "gossip_checkpoint_age_seconds": "Seconds since this peer's last checkpoint was written.",
        "gossip_models_rejected_total": "Models refused as outliers (requests answered MODEL_REJECTED and replies not installed).",
        "gossip_weight_capped_total": "Exchanges in which the other side claimed more than the weight cap allows.",
        "gossip_push_sum_mass": "This push-sum peer's mass now.",
        "gossip_uptime_seconds": "Seconds since the node started.",
        "gossip_bootstrap_peers_registered": "Peers this bootstrap knows (registered and not forgotten).",
    ]

    /// Buckets of the exchange duration histogram, in seconds.
    public static let durationBuckets: [Double] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]
}

/// A swift-metrics factory over one registry that gives every metric its HELP text from
/// `MetricCatalog` (swift-prometheus's own factory registers them without one).
struct CatalogMetricsFactory: MetricsFactory {
    let registry: PrometheusCollectorRegistry

    private func help(_ label: String) -> String { MetricCatalog.help[label] ?? "" }

    func makeCounter(label: String, dimensions: [(String, String)]) -> any CounterHandler {
        registry.makeCounter(name: label, labels: dimensions, help: help(label))
    }
    func makeFloatingPointCounter(label: String, dimensions: [(String, String)]) -> any FloatingPointCounterHandler {
        registry.makeCounter(name: label, labels: dimensions, help: help(label))
    }
    func makeMeter(label: String, dimensions: [(String, String)]) -> any MeterHandler {
        registry.makeGauge(name: label, labels: dimensions, help: help(label))
    }
    func makeRecorder(label: String, dimensions: [(String, String)], aggregate: Bool) -> any RecorderHandler {
        if aggregate {
            return registry.makeValueHistogram(name: label, labels: dimensions, buckets: MetricCatalog.durationBuckets, help: help(label))
        }
        return registry.makeGauge(name: label, labels: dimensions, help: help(label))
    }
    func makeTimer(label: String, dimensions: [(String, String)]) -> any TimerHandler {
        registry.makeDurationHistogram(name: label, labels: dimensions,
                                       buckets: MetricCatalog.durationBuckets.map { .nanoseconds(Int64($0 * 1e9)) }, help: help(label))
    }
    func destroyCounter(_ handler: any CounterHandler) {
        if let c = handler as? Prometheus.Counter { registry.unregisterCounter(c) }
    }
    func destroyFloatingPointCounter(_ handler: any FloatingPointCounterHandler) {
        if let c = handler as? Prometheus.Counter { registry.unregisterCounter(c) }
    }
    func destroyMeter(_ handler: any MeterHandler) {
        if let g = handler as? Prometheus.Gauge { registry.unregisterGauge(g) }
    }
    func destroyRecorder(_ handler: any RecorderHandler) {
        if let g = handler as? Prometheus.Gauge { registry.unregisterGauge(g) }
        if let h = handler as? ValueHistogram { registry.unregisterValueHistogram(h) }
    }
    func destroyTimer(_ handler: any TimerHandler) {
        if let h = handler as? DurationHistogram { registry.unregisterDurationHistogram(h) }
    }
}

/// The metrics of one node: a registry, the swift-metrics handles that write into it, and the
/// refresh from `StatusReport` done at each scrape. Thread-safe: events arrive on the peer's
/// loop thread, scrapes on the HTTP responder's queue; both take one lock.
public final class NodeMetrics: TelemetrySink, @unchecked Sendable {
    /// The registry this node's metrics live in (one per node; nothing is global).
    public let registry = PrometheusCollectorRegistry()
    private let factory: CatalogMetricsFactory
    private let status: @Sendable () -> StatusReport
    private let checkpointPath: String?
    private let isBootstrap: Bool
    private let lock = Mutex<Void>(())

    // Guarded by `lock`.
    private var counters: [String: CoreMetrics.Counter] = [:]
    private var lastCounts: [String: Int] = [:]
    private var gauges: [String: CoreMetrics.Gauge] = [:]
    /// One counter per (outcome, status) label pair.
    private struct Series: Hashable { var outcome: String; var status: String }
    private var exchangeCounters: [Series: CoreMetrics.Counter] = [:]
    private let duration: CoreMetrics.Timer?

    /// Distinct (outcome, status) label pairs kept; further pairs count under status "other",
    /// so a peer answering odd status codes cannot grow the exposition without bound.
    static let maxExchangeSeries = 32

    /// - Parameters:
    ///   - role: "peer" or "bootstrap" (a bootstrap exposes only membership, bytes and uptime).
    ///   - checkpointPath: the peer's checkpoint file (its age is read from the file's mtime).
    ///   - status: the node's status, called at each scrape.
    public init(role: String, checkpointPath: String? = nil, status: @escaping @Sendable () -> StatusReport) {
        factory = CatalogMetricsFactory(registry: registry)
        self.status = status
        self.checkpointPath = checkpointPath
        isBootstrap = role == "bootstrap"
        duration = isBootstrap ? nil : CoreMetrics.Timer(label: "gossip_exchange_duration_seconds", factory: factory)
        if !isBootstrap {
            // Created up front so the exposition names them before the first exchange.
            for name in ["gossip_rounds_total", "gossip_sgd_steps_total", "gossip_samples_total", "gossip_peers_dropped_total"] {
                counters[name] = CoreMetrics.Counter(label: name, factory: factory)
            }
        }
    }

    /// A peer's path to its checkpoint file under `stateDir` (nil without one).
    public static func checkpointPath(stateDir: String?) -> String? {
        stateDir.map { ($0 as NSString).appendingPathComponent("model.safetensors") }
    }

    public func record(_ event: NodeEvent) {
        lock.withLock { _ in
            switch event {
            case .exchange(_, _, let outcome, let st, let distance, let seconds):
                let statusLabel = st ?? (outcome == "ok" ? "OK" : "none")
                var key = Series(outcome: outcome, status: statusLabel)
                if exchangeCounters[key] == nil && exchangeCounters.count >= NodeMetrics.maxExchangeSeries {
                    key.status = "other"
                }
                let c = exchangeCounters[key] ?? {
                    let c = CoreMetrics.Counter(label: "gossip_exchanges_total",
                                                dimensions: [("outcome", key.outcome), ("status", key.status)], factory: factory)
                    exchangeCounters[key] = c
                    return c
                }()
                c.increment()
                if seconds.isFinite && seconds >= 0 { duration?.recordSeconds(seconds) }
                if outcome == "ok", let d = distance, d.isFinite { gauge("gossip_consensus_distance").record(d) }
            case .membership(_, _, _, let removed):
                if !removed.isEmpty { counters["gossip_peers_dropped_total"]?.increment(by: removed.count) }
            case .round, .eval:
                break   // read from the status at scrape time
            }
        }
    }

    /// Refreshes the status-derived metrics and returns the exposition (Prometheus text format).
    public func exposition() -> [UInt8] {
        let s = status()
        let checkpointAge = checkpointPath.flatMap { p -> Double? in
            guard let attrs = try? FileManager.default.attributesOfItem(atPath: p),
                  let m = attrs[.modificationDate] as? Date else { return nil }
            return max(0, Date().timeIntervalSince(m))
        }
        return lock.withLock { _ in
            if isBootstrap {
                gauge("gossip_bootstrap_peers_registered").record(s.peers.count)
            } else {
                advance("gossip_rounds_total", to: s.round)
                advance("gossip_sgd_steps_total", to: s.step)
                advance("gossip_samples_total", to: s.samplesSeen)
                advance("gossip_exchanges_refused_total", to: s.exchanges.refused)
                advance("gossip_models_rejected_total", to: s.rejected.modelsRejected)
                advance("gossip_weight_capped_total", to: s.rejected.weightCapped)
                gauge("gossip_peers_known").record(s.peers.count)
                if let v = s.loss { gauge("gossip_training_loss").record(v) }
                if let v = s.accuracy { gauge("gossip_heldout_accuracy").record(v) }
                if let v = s.heldOutLoss { gauge("gossip_heldout_loss").record(v) }
                if let p = s.pushSum { gauge("gossip_push_sum_mass").record(p.mass) }
                if let age = checkpointAge { gauge("gossip_checkpoint_age_seconds").record(age) }
            }
            advance("gossip_bytes_received_total", to: s.bytesIn)
            advance("gossip_bytes_sent_total", to: s.bytesOut)
            gauge("gossip_uptime_seconds").record(s.uptimeSeconds)
            return registry.emitToBuffer()
        }
    }

    /// Moves a counter mirrored from the status up to `value` (a counter never goes down).
    private func advance(_ name: String, to value: Int) {
        let c = counters[name] ?? {
            let c = CoreMetrics.Counter(label: name, factory: factory)
            counters[name] = c
            return c
        }()
        let last = lastCounts[name] ?? 0
        if value > last {
            c.increment(by: value - last)
            lastCounts[name] = value
        }
    }

    /// The gauge `name`, created the first time it has a value (an unknown value is absent,
    /// not a misleading 0).
    private func gauge(_ name: String) -> CoreMetrics.Gauge {
        if let g = gauges[name] { return g }
        let g = CoreMetrics.Gauge(label: name, factory: factory)
        gauges[name] = g
        return g
    }
}

/// Serves a node's metrics at `GET /metrics` on `listen` (plaintext, no authentication: bind it
/// to loopback or a private interface).
public enum MetricsEndpoint {
    /// Starts serving `metrics`; the returned responder's `endpoint` has the bound port.
    /// - Throws: `RPCError(.unavailable)` when the address cannot be bound.
    public static func start(listen: Endpoint, metrics: NodeMetrics, options: HTTPResponder.Options = .init()) throws(RPCError) -> HTTPResponder {
        try HTTPResponder(host: listen.host, port: listen.port, path: "/metrics", options: options) {
            HTTPResponder.Document(contentType: prometheusContentType, bytes: metrics.exposition())
        }
    }
}
