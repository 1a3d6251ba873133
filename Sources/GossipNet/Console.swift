// Text output of the executables (stdout and stderr) through write(2), so that a reader that
// goes away (`gossipd demo | head -3`) is an ordinary condition, not a crash: Foundation's
// `FileHandle.write` traps on EPIPE, and without SIG_IGN the kernel kills the process with
// SIGPIPE. After EPIPE (or any other write error) a stream prints nothing more; a CLI that set
// `exitOnClosedStdout` exits with status 0 then, the way a pipeline user expects.
import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A process-wide text stream over a file descriptor (1 or 2). Thread-safe: each call writes
/// its whole text before another call's text starts.
public final class Console: Sendable {
    /// Standard output.
    public static let out = Console(fd: 1, name: "stdout")
    /// Standard error (diagnostics).
    public static let err = Console(fd: 2, name: "stderr")

    /// What to do when stdout's reader has gone away.
    public enum ClosedStdout: Sendable {
        /// Exit the process with status 0 (CLIs: gossipctl, framedump, gossip-bench).
        case exit
        /// Stop printing and keep running (the daemon).
        case keepRunning
    }

    private static let exitOnClosedStdout = Atomic<Bool>(false)

    /// Call once at the start of an executable: ignores SIGPIPE (a write to a closed pipe
    /// then fails with EPIPE instead of killing the process) and sets what a closed stdout does.
    public static func setUp(onClosedStdout: ClosedStdout) {
        ignoreSIGPIPE()
        exitOnClosedStdout.store(onClosedStdout == .exit, ordering: .relaxed)
    }

    let fd: Int32
    let name: String
    /// Serialises writers; holds true once the stream is closed (nothing more is written).
    private let state = Mutex<Bool>(false)

    init(fd: Int32, name: String) {
        self.fd = fd
        self.name = name
    }

    /// True once a write failed (the reader went away, or the descriptor is unusable).
    public var isClosed: Bool { state.withLock { $0 } }

    /// Writes `text` followed by a newline.
    public func line(_ text: String) { write(text + "\n") }

    /// Writes all of `text`, retrying short writes and EINTR; waits while a non-blocking
    /// descriptor is full. Returns false when the stream is closed (now or before): the text
    /// was not (all) written and nothing more will be.
    @discardableResult
    public func write(_ text: String) -> Bool {
        var text = text
        let failure: Int32? = text.withUTF8 { bytes in
            state.withLock { closed -> Int32? in
                if closed { return nil }
                if let e = Console.writeAll(fd, UnsafeRawBufferPointer(bytes)) {
                    closed = true
                    return e
                }
                return nil
            }
        }
        guard let e = failure else { return !isClosed }
        if fd == 1 && Console.exitOnClosedStdout.load(ordering: .relaxed) { Console.exitNow() }
        if e != EPIPE && fd != 2 {
            Console.err.line("gossip: cannot write to \(name) (\(Sys.errorText(e))); output stops here")
        }
        return false
    }

    /// Writes every byte; returns the errno that stopped it, or nil when all were written.
    static func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) -> Int32? {
        var at = 0
        while at < bytes.count {
            do {
                switch try Sys.call("write", { systemWrite(fd, bytes.baseAddress! + at, bytes.count - at) }) {
                case .done(let n): at += n
                case .wouldBlock:
                    var p = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
                    _ = poll(&p, 1, 1000)
                }
            } catch {
                return error.errno
            }
        }
        return nil
    }

    /// Exits with status 0 without running anything that could print again.
    static func exitNow() -> Never { _exit(0) }
}

@inline(__always)
private func systemWrite(_ fd: Int32, _ p: UnsafeRawPointer, _ n: Int) -> Int {
    #if canImport(Glibc)
    Glibc.write(fd, p, n)
    #else
    Darwin.write(fd, p, n)
    #endif
}
