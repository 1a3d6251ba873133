// The owner of one file descriptor. A descriptor number is reused by the kernel as soon as it
// is closed, so a second close (or a close while a Dispatch source still watches it) hits
// whatever was opened next. This type makes the rules of DESIGN.md §4.3 structural: one
// owner, closed exactly once, and only after every Dispatch source on it ran its cancel handler.
import Synchronization

/// Owns a file descriptor; thread-safe.
final class Descriptor: Sendable {
    /// The descriptor number, for syscalls. Never close it directly: call `close()`.
    let raw: Int32
    private struct State {
        var sources = 0
        var closeRequested = false
        var closed = false
    }
    private let state = Mutex(State())

    /// Takes ownership of `raw`.
    init(_ raw: Int32) { self.raw = raw }

    /// Records a Dispatch source on this descriptor; its cancel handler must call `sourceCancelled()`.
    func sourceAttached() {
        state.withLock { s in
            precondition(!s.closeRequested, "a source attached to descriptor \(raw) after its close was requested")
            s.sources += 1
        }
    }

    /// Called from a source's cancel handler; the last one closes the descriptor if a close
    /// was requested.
    func sourceCancelled() {
        let closeNow = state.withLock { s -> Bool in
            precondition(s.sources > 0, "more cancel handlers than sources on descriptor \(raw)")
            s.sources -= 1
            return takeClose(&s)
        }
        if closeNow { Sys.close(raw) }
    }

    /// Closes the descriptor now, or once the last attached source was cancelled. Idempotent.
    func close() {
        let closeNow = state.withLock { s -> Bool in
            s.closeRequested = true
            return takeClose(&s)
        }
        if closeNow { Sys.close(raw) }
    }

    /// Whether the descriptor has been closed.
    var isClosed: Bool { state.withLock { $0.closed } }

    private func takeClose(_ s: inout State) -> Bool {
        guard s.closeRequested, s.sources == 0, !s.closed else { return false }
        s.closed = true
        return true
    }

    deinit {
        // An owner that forgot to close must not leak the descriptor; no source can be left
        // (each holds the owner until its cancel handler ran).
        let leaked = state.withLock { !$0.closed }
        if leaked { Sys.close(raw) }
    }
}
