// The only syscalls of GossipSecure: reading and writing key files. Each wrapper reads errno at
// once and retries EINTR (DESIGN.md §4.2).
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A failed syscall: its name and errno.
struct SyscallError: Error {
    let call: String
    let errno: Int32
    var reason: String { String(cString: strerror(errno)) }
}

enum KeyFileSyscall {
    private static func retrying<T: BinaryInteger>(_ call: String, _ body: () -> T) throws(SyscallError) -> T {
        while true {
            let r = body()
            if r >= 0 { return r }
            let err = errno
            if err == EINTR { continue }
            throw SyscallError(call: call, errno: err)
        }
    }

    static func open(_ path: String, _ flags: Int32, _ mode: mode_t = 0) throws(SyscallError) -> Int32 {
        try retrying("open") { path.withCString { Glibc.open($0, flags | O_CLOEXEC, mode) } }
    }

    static func fstat(_ fd: Int32) throws(SyscallError) -> stat {
        var st = stat()
        _ = try retrying("fstat") { Glibc.fstat(fd, &st) }
        return st
    }

    static func fchmod(_ fd: Int32, _ mode: mode_t) throws(SyscallError) {
        _ = try retrying("fchmod") { Glibc.fchmod(fd, mode) }
    }

    /// Reads until EOF or `limit + 1` bytes, so a caller can tell "too large" from "exactly limit".
    static func readAll(_ fd: Int32, limit: Int) throws(SyscallError) -> [UInt8] {
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while out.count <= limit {
            let n = try retrying("read") { chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) } }
            if n == 0 { break }
            out.append(contentsOf: chunk[..<n])
        }
        return out
    }

    static func writeAll(_ fd: Int32, _ bytes: [UInt8]) throws(SyscallError) {
        var at = 0
        while at < bytes.count {
            let n = try retrying("write") { bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + at, $0.count - at) } }
            at += n
        }
    }

    static func fsync(_ fd: Int32) throws(SyscallError) {
        _ = try retrying("fsync") { Glibc.fsync(fd) }
    }

    static func close(_ fd: Int32) {
        // close is not retried on EINTR (Linux closes the fd regardless).
        _ = Glibc.close(fd)
    }

    static func link(_ from: String, _ to: String) throws(SyscallError) {
        _ = try retrying("link") { from.withCString { f in to.withCString { t in Glibc.link(f, t) } } }
    }

    static func rename(_ from: String, _ to: String) throws(SyscallError) {
        _ = try retrying("rename") { from.withCString { f in to.withCString { t in Glibc.rename(f, t) } } }
    }

    static func unlink(_ path: String) {
        _ = path.withCString { Glibc.unlink($0) }
    }
}
