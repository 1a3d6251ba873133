// Trims the process's receive buffer pool (GossipWire's `ReceiveBuffers.shared`) when it has
// been idle, so memory taken by a burst of large messages (or a hostile one) is returned to
// the system after the connections close. One timer for the whole process, started by the
// first connection.
import Dispatch
import GossipWire

enum ReceiveBufferTrimmer {
    /// How long the pool must go unused before it is trimmed, and how often that is checked.
    /// Long enough that a node exchanging models every second or so keeps reusing its buffers
    /// (a fresh 400 MB buffer costs more in page faults than receiving into it), short enough
    /// that memory falls back soon after a burst.
    static let idle: Duration = .seconds(3)
    static let interval: Duration = .milliseconds(500)

    private nonisolated(unsafe) static let timer: DispatchSourceTimer = {
        let t = DispatchSource.makeTimerSource(queue: DispatchQueue(label: "gossip.net.trim", qos: .utility))
        t.schedule(deadline: .now() + interval.dispatch, repeating: interval.dispatch, leeway: .milliseconds(100))
        t.setEventHandler { ReceiveBuffers.shared.trim(ifIdleFor: idle) }
        t.resume()
        return t
    }()

    /// Starts the timer (once per process; later calls do nothing).
    static func start() { _ = timer }
}
