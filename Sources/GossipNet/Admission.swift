// The node-level admission settings (`gossipd --max-conns-per-address`, `--auth-deadline-ms`)
// and how they fill a `ServerConfig` (SPEC §11, "Fair admission"; the mechanism is in
// RPCServer.swift).

/// Fair admission: how many connections one remote address may hold, and how long a new
/// connection has to authenticate and send its first request.
public struct AdmissionConfig: Sendable, Equatable {
    /// Connections open at once from one remote IP address; 0: no per-address limit.
    public var maxConnectionsPerAddress = ServerConfig().maxConnectionsPerAddress
    /// A connection must complete the handshake and one whole request within this.
    public var authDeadline: Duration = ServerConfig().silentTimeout

    public init() {}
}

extension ServerConfig {
    /// Applies `admission`'s limits; the secure handshake's own deadline is never longer
    /// than the auth deadline.
    public mutating func apply(_ admission: AdmissionConfig) {
        maxConnectionsPerAddress = admission.maxConnectionsPerAddress
        silentTimeout = admission.authDeadline
        if var s = security, s.handshakeTimeout > admission.authDeadline {
            s.handshakeTimeout = admission.authDeadline
            security = s
        }
    }
}
