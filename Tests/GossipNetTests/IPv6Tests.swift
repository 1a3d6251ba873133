// The transport tests over ::1. Where the machine has no IPv6 loopback the suite is reported
// as skipped (with the reason), never as passed.
import Testing
import GossipWire
@testable import GossipNet

@Suite(.serialized, .enabled(if: ipv6Available, "::1 cannot be bound on this machine (no IPv6 loopback)"))
struct IPv6Tests {
    @Test func requestReply() async throws { try await RPCTests().requestReply(.ipv6) }
    @Test func thousandInFlightOnOneConnection() async throws { try await RPCTests().thousandInFlightOnOneConnection(.ipv6) }
    @Test func hundredConcurrentClients() async throws { try await RPCTests().hundredConcurrentClients(.ipv6) }
    @Test func replyLargerThanMaxFrameIsChunked() async throws { try await RPCTests().replyLargerThanMaxFrameIsChunked(.ipv6) }
    @Test func deadlineExpires() async throws { try await RPCTests().deadlineExpires(.ipv6) }
    @Test func stalledHalfFrameIsDropped() async throws { try await RPCTests().stalledHalfFrameIsDropped(.ipv6) }
    @Test func garbageGetsErrorReplyAndClose() async throws { try await RPCTests().garbageGetsErrorReplyAndClose(.ipv6) }
}
