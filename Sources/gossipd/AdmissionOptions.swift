// `--max-conns-per-address` and `--auth-deadline-ms` (fair admission, SPEC §11) for both
// roles; the mechanism is GossipNet's (RPCServer.swift, Admission.swift).
import ArgumentParser
import GossipNet

struct AdmissionOptions: ParsableArguments {
    @Option(help: "Connections one remote IP address may hold open at once; more are answered RESOURCE_EXHAUSTED and closed (0: no limit).")
    var maxConnsPerAddress: Int = AdmissionConfig().maxConnectionsPerAddress
    @Option(help: "Milliseconds a new connection has to complete the secure handshake and send its first whole request before it is closed.")
    var authDeadlineMs: Int = Int(AdmissionConfig().authDeadline.components.seconds * 1000)

    func validate() throws {
        guard maxConnsPerAddress >= 0 else { throw ValidationError("--max-conns-per-address must be at least 0 (0: no limit)") }
        guard authDeadlineMs > 0 else { throw ValidationError("--auth-deadline-ms must be positive") }
    }

    var config: AdmissionConfig {
        var a = AdmissionConfig()
        a.maxConnectionsPerAddress = maxConnsPerAddress
        a.authDeadline = .milliseconds(authDeadlineMs)
        return a
    }
}
