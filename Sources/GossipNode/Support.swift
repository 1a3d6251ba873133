// Small shared pieces of the node: its error type, a seeded RNG, a blocking RPC call for
// threads that may block and the ready-file writer (durations: GossipWire's Duration helpers).
import Foundation
import GossipNet
import GossipWire
import Logging
import Synchronization

/// An error of the node layer: what was wrong and what to do.
public struct NodeError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// SplitMix64: small, fast, seeded; used for peer choice so runs are reproducible.
struct SplitMix: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

private final class ResultBox<T>: @unchecked Sendable {
    var value: T?
}

/// Calls an RPC and blocks the calling thread until its one terminal outcome arrives.
/// Only for threads that may block (the training thread, CLIs), never a connection queue.
public func callSync(_ client: RPCClient, _ ep: Endpoint, _ type: MessageType, _ payload: ByteSlice,
                     deadline: Duration, options: RPCOptions = RPCOptions()) -> Result<InboundMessage, RPCError> {
    let done = DispatchSemaphore(value: 0)
    let box = ResultBox<Result<InboundMessage, RPCError>>()
    client.call(ep, type: type, payload: payload, options: options, deadline: deadline) { result in
        box.value = result
        done.signal()
    }
    // The RPC layer guarantees an outcome by the deadline; the margin only guards against a bug.
    if done.wait(timeout: .now() + deadline.seconds + 10) == .timedOut {
        return .failure(RPCError(.deadlineExceeded, "no outcome from \(ep) within \(deadline) (internal)"))
    }
    return box.value!
}

/// Writes `text` to `path` atomically (temporary file, then rename), for scripts that wait on it.
func writeReadyFile(_ path: String, _ text: String) throws {
    let tmp = path + ".tmp.\(getpid())"
    try Data((text + "\n").utf8).write(to: URL(fileURLWithPath: tmp))
    guard rename(tmp, path) == 0 else {
        throw NodeError("cannot write ready file \(path): \(String(cString: strerror(errno)))")
    }
}

/// Prints one line on stdout at once (unbuffered), for scripts that read it. When stdout's
/// reader has gone away the line is dropped (see `Console`); it never traps.
public func emitLine(_ s: String) {
    Console.out.line(s)
}

extension RPCResponder {
    /// Replies with what `encode` produces; an encoding failure becomes an error reply.
    func reply(options: RPCOptions = RPCOptions(), _ encode: () throws -> ByteSlice) {
        do {
            reply(try encode(), options: options)
        } catch {
            fail(for: error)
        }
    }

    /// Answers with the error reply `error` maps to (SPEC §5, "Which status a refused field
    /// gets"): a `WireError` its own status (RESOURCE_EXHAUSTED past a limit, INVALID_ARGUMENT
    /// when malformed, ...), an `RPCError` its code, anything else INTERNAL.
    public func fail(for error: any Error) {
        switch error {
        case let e as WireError: fail(e.statusCode, e.description)
        case let e as RPCError: fail(e.code, e.message)
        default: fail(.internal, "\(error)")
        }
    }
}

/// Warns when a node would advertise a wildcard address, which other machines cannot dial.
func warnIfUnreachable(_ advertised: Endpoint, logger: Logger) {
    if ["0.0.0.0", "::", "0:0:0:0:0:0:0:0"].contains(advertised.host) {
        logger.warning("advertising a wildcard address other machines cannot reach; pass --advertise HOST:PORT with this machine's name or address",
                       metadata: ["advertised": "\(advertised)"])
    }
}

/// The requests both roles answer alike: Status (the node's report), Ping (echo) and Stop
/// (reply, then stop; only as `rights` allow, see `ControlRights`).
///
/// Status and Stop requests have an empty payload (SPEC §5.4); one with any payload byte is
/// answered INVALID_ARGUMENT and changes nothing (a Stop carrying garbage does not stop the node).
func registerCommonHandlers(_ server: RPCServer, logger: Logger, rights: ControlRights,
                            status: @escaping @Sendable () -> StatusReport?,
                            stop: @escaping @Sendable () -> Void) {
    server.register(.status) { msg, responder in
        if let refusal = nonEmptyPayloadRefusal(msg) { return responder.fail(refusal.code, refusal.message) }
        guard let s = status() else { return responder.fail(.unavailable, "the node is shutting down") }
        responder.reply { try WireCodec.encode(StatusReply(json: s.json())) }
    }
    server.register(.ping) { msg, responder in responder.reply(msg.payload) }
    registerGuarded(server, .stop, rights: rights, logger: logger) { msg, responder in
        if let refusal = nonEmptyPayloadRefusal(msg) {
            logger.warning("Stop request with a payload refused; not stopping", metadata: ["from": "\(responder.peerAddress)"])
            return responder.fail(refusal.code, refusal.message)
        }
        responder.reply(ByteSlice(ByteStorage(count: 0)))
        logger.notice("stop requested", metadata: ["via": "\(responder.isControl ? "control socket" : "admin identity")"])
        stop()
    }
}

/// The error reply for a request whose body must be empty (Status, Stop) but is not: the
/// body decoder's own INVALID_ARGUMENT, naming the request and its byte count. nil when empty.
func nonEmptyPayloadRefusal(_ msg: InboundMessage) -> ErrorReply? {
    do {
        _ = try MessageBody.decode(type: msg.type, kind: .request, payload: msg.payload)
        return nil
    } catch {
        return ErrorReply(code: error.statusCode, message: error.description)
    }
}

/// A stop request that may arrive before the node it is for exists (a signal during start-up):
/// it is remembered and delivered as soon as the node attaches.
public final class StopLatch: Sendable {
    private struct State { var requested = false; var target: (@Sendable () -> Void)? }
    private let state = Mutex(State())

    public init() {}

    /// Requests the stop: delivered now when a node is attached, else when one attaches.
    public func request() {
        let target = state.withLock { s -> (@Sendable () -> Void)? in
            s.requested = true
            return s.target
        }
        target?()
    }

    /// Attaches the node's stop; calls it at once when a stop was already requested.
    public func attach(_ stop: @escaping @Sendable () -> Void) {
        let fire = state.withLock { s -> Bool in
            s.target = stop
            return s.requested
        }
        if fire { stop() }
    }

    /// True once a stop was requested.
    public var isRequested: Bool { state.withLock { $0.requested } }
}
