// Descriptor: one owner closes a file descriptor exactly once, and only after every Dispatch
// source on it ran its cancel handler.
import Dispatch
import Testing
@testable import GossipNet
#if canImport(Glibc)
import Glibc
#endif

private func isOpen(_ fd: Int32) -> Bool { fcntl(fd, F_GETFD) != -1 }

/// The inode behind `fd`, or nil when closed: tells "still the same socket" from "a number
/// another test's socket reused since".
private func inode(_ fd: Int32) -> UInt? {
    var st = stat()
    return fstat(fd, &st) == 0 ? UInt(st.st_ino) : nil
}

@Suite struct DescriptorTests {
    @Test func closesOnceAfterBothSourcesWereCancelled() async throws {
        let (a, b) = try Sys.socketpair()
        defer { Sys.close(b) }
        let d = Descriptor(a)
        let ino = inode(a)
        let r = DispatchSource.makeReadSource(fileDescriptor: a, queue: DispatchQueue(label: "test.descriptor.r"))
        let w = DispatchSource.makeWriteSource(fileDescriptor: a, queue: DispatchQueue(label: "test.descriptor.w"))
        let gate = DispatchSemaphore(value: 0)
        let cancelled = Flag()
        d.sourceAttached()
        d.sourceAttached()
        r.setCancelHandler { d.sourceCancelled(); cancelled.set() }
        // The write source's cancel handler waits for the test, so the close must wait too.
        w.setCancelHandler { gate.wait(); d.sourceCancelled(); cancelled.set() }
        r.resume()
        w.resume()
        r.cancel()
        w.cancel()
        d.close()
        await waitFor("the read source's cancel handler") { cancelled.count >= 1 }
        #expect(inode(a) == ino, "closed while a source's cancel handler had not run")
        #expect(!d.isClosed)
        gate.signal()
        await waitFor("both cancel handlers") { cancelled.count == 2 }
        await waitFor("the descriptor to close") { d.isClosed }
        #expect(inode(a) != ino)
    }

    @Test func aSecondCloseDoesNotCloseTheNextDescriptorWithThatNumber() throws {
        let (a, b) = try Sys.socketpair()
        defer { Sys.close(b) }
        let ino = inode(a)
        let d = Descriptor(a)
        d.close()
        #expect(inode(a) != ino)
        // The kernel hands out the lowest free number: most likely `a` again.
        let (c, e) = try Sys.socketpair()
        defer { Sys.close(c); Sys.close(e) }
        d.close()
        #expect(isOpen(c) && isOpen(e), "a second close hit a descriptor opened since")
    }

    @Test func anUnclosedOwnerDoesNotLeak() throws {
        let (a, b) = try Sys.socketpair()
        defer { Sys.close(b) }
        let ino = inode(a)
        do { _ = Descriptor(a) }
        #expect(inode(a) != ino)
    }
}
