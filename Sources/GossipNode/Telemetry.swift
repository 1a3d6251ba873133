// What a peer reports as it runs, for whoever watches: the Prometheus metrics, the JSON-lines
// metrics log. The peer emits events at a few points (a round done, an evaluation, one of its
// own exchanges finished, the set of known peers changed); sinks receive them synchronously on
// the emitting thread (the peer's loop thread, outside its lock) and must return quickly.
import Foundation
import Synchronization

/// One thing that happened on a peer.
public enum NodeEvent: Sendable {
    /// A training round finished: its mean training loss, and the node's SGD steps and samples so far.
    case round(round: Int, loss: Double, steps: Int, samples: Int)
    /// The model was evaluated on the held-out split.
    case eval(round: Int, accuracy: Double, loss: Double)
    /// An exchange this node started ended. `outcome`: "ok", "local_busy", "remote_busy",
    /// "failed"; `status`: the wire status name for "failed" ("UNAVAILABLE", ...);
    /// `distance`: the relative L2 distance between the two models before averaging ("ok");
    /// `seconds`: from the start of the attempt (reservation included) to its end.
    case exchange(round: Int, peer: String, outcome: String, status: String?, distance: Double?, seconds: Double)
    /// The known members changed since the last report.
    case membership(round: Int, known: Int, added: [String], removed: [String])
}

/// A receiver of `NodeEvent`s.
public protocol TelemetrySink: Sendable {
    func record(_ event: NodeEvent)
}

/// The sinks of one node; adding one is thread-safe, emitting with none costs one lock.
public final class Telemetry: Sendable {
    private let sinks = Mutex<[any TelemetrySink]>([])

    public init() {}

    public func add(_ sink: any TelemetrySink) {
        sinks.withLock { $0.append(sink) }
    }

    public var isEmpty: Bool { sinks.withLock { $0.isEmpty } }

    public func emit(_ event: NodeEvent) {
        let all = sinks.withLock { $0 }
        for s in all { s.record(event) }
    }
}
