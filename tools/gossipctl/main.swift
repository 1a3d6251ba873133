// gossipctl: drive a node from scripts or by hand. Argument parsing and output only; the
// requests and their rendering live in GossipNode.Control.
import ArgumentParser
import Foundation
import GossipNet
import GossipNode
import GossipSecure

enum OutputFormat: String, ExpressibleByArgument, CaseIterable { case text, json }

struct Options: ParsableArguments {
    @Option(help: "The node's HOST:PORT (TCP).") var endpoint: String?
    @Option(help: "The node's control socket (on its host; its --control-socket, by default STATE_DIR/control.sock): where stop and gossip are accepted without an admin key.")
    var socket: String?
    @Option(help: "The network key file, to talk to an encrypted node over TCP (--endpoint).") var networkKey: String?
    @Option(help: "This client's identity key file, for TCP to an encrypted node (an admin's: its public key is in the node's --admin-key). Default: an ephemeral identity.")
    var identity: String?
    @Option(help: "Seconds to wait for the node's answer (longer than a node's 10 s exchange deadline).") var timeout: Double = 20
    @Option(name: [.short, .customLong("output")], help: "text (for people) or json (one object, for scripts).")
    var output: OutputFormat = .text

    func control() throws -> Control {
        guard timeout > 0 else { throw ValidationError("--timeout must be positive") }
        let t = Duration.milliseconds(Int64(timeout * 1000))
        switch (endpoint, socket) {
        case (nil, nil):
            throw ValidationError("give --endpoint HOST:PORT (TCP) or --socket PATH (the node's control socket)")
        case (.some, .some):
            throw ValidationError("give one of --endpoint and --socket, not both")
        case (nil, .some(let path)):
            if networkKey != nil || identity != nil {
                throw ValidationError("--network-key and --identity are for TCP (--endpoint); the control socket needs neither")
            }
            return Control(socketPath: path, timeout: t)
        case (.some(let e), nil):
            let ep: Endpoint
            do { ep = try Endpoint(parsing: e) } catch { throw ValidationError("--endpoint '\(e)': \(error)") }
            do throws(ControlFailure) {
                return Control(endpoint: ep, timeout: t, security: try clientSecurity(networkKey: networkKey, identity: identity))
            } catch { fail(error) }
        }
    }

    func emit(text: String, json: String) {
        Console.out.line(output == .json ? json : text)
    }

    func fail(_ f: ControlFailure) -> Never {
        Console.err.line("gossipctl: \(f.message)")
        if output == .json { Console.out.line(f.json) }
        Foundation.exit(f.exitCode.rawValue)
    }
}

/// The channel security of a TCP client: nil without a network key.
func clientSecurity(networkKey: String?, identity: String?) throws(ControlFailure) -> ChannelSecurity? {
    guard let networkKey else {
        if identity != nil {
            throw ControlFailure(exitCode: .usage, message: "--identity needs --network-key: a plaintext connection proves no identity", status: nil)
        }
        return nil
    }
    do throws(NoiseError) {
        let key = try NetworkKey.read(from: networkKey)
        let id = try identity.map { path throws(NoiseError) in try IdentityKey.read(from: path) } ?? IdentityKey.generate()
        return ChannelSecurity(networkKey: key, identity: id)
    } catch {
        throw ControlFailure(exitCode: .cannotRead, message: error.message, status: nil)
    }
}


struct Status: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show the node's state: role, round, loss, accuracy, peers, traffic.")
    @OptionGroup var options: Options
    func run() throws {
        do {
            let s = try options.control().status()
            options.emit(text: Control.text(s), json: s.json())
        } catch let f as ControlFailure { options.fail(f) }
    }
}

struct Peers: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List the peers the node knows.")
    @OptionGroup var options: Options
    func run() throws {
        do {
            let s = try options.control().status()
            options.emit(text: Control.peersText(s), json: Control.peersJSON(s))
        } catch let f as ControlFailure { options.fail(f) }
    }
}

struct Model: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Export the node's current model as a safetensors file.")
    @OptionGroup var options: Options
    @Option(help: "Where to write the .safetensors file.") var out: String
    func run() throws {
        do {
            let summary = try options.control().exportModel(to: out)
            let text = "wrote \(out): \(summary["architecture"] ?? "") (\(summary["parameters"] ?? 0) parameters, round \(summary["round"] ?? 0), schema \(summary["schema_hash"] ?? ""))"
            options.emit(text: text, json: jsonText(summary))
        } catch let f as ControlFailure { options.fail(f) }
    }
}

struct Gossip: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Make the node run one exchange now.")
    @OptionGroup var options: Options
    @Option(help: "The peer HOST:PORT to exchange with (default: a random known peer).") var with: String?
    func run() throws {
        do {
            let r = try options.control().gossip(with: with ?? "")
            let moved = String(format: "%.4f%%", r.relativeL2Change * 100)
            options.emit(text: "exchanged with \(r.peer): this node's weights moved \(moved) (relative L2); both now hold the same model",
                         json: (try? r.json()) ?? "{}")
        } catch let f as ControlFailure { options.fail(f) }
    }
}

struct Stop: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Stop the node gracefully (a peer checkpoints first).")
    @OptionGroup var options: Options
    func run() throws {
        do {
            let c = try options.control()
            try c.stop()
            options.emit(text: "stopping \(c.target)", json: jsonText([c.socketPath == nil ? "endpoint" : "socket": c.socketPath ?? c.endpoint.description, "stopping": true]))
        } catch let f as ControlFailure { options.fail(f) }
    }
}

struct Wait: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Block until the node has finished training (--converged): exit 0 when it has, 3 when --timeout passed first.",
        discussion: "The node holds the request until its final model is written (SPEC §5.8); --timeout (seconds) bounds the wait. Exit 0 finished; 3 not finished within --timeout; 69 unreachable, or it stopped before finishing.")
    @OptionGroup var options: Options
    @Flag(help: "Wait for the end of training by convergence (the only condition so far; required).") var converged = false
    func run() throws {
        guard converged else { throw ValidationError("say what to wait for: --converged") }
        do {
            let c = try options.control()
            let r = try c.waitConverged(timeout: c.timeout)
            let acc = r.accuracy.map { String(format: "%.2f%%", $0 * 100) } ?? "-"
            options.emit(text: "\(r.endpoint) finished at round \(r.round): accuracy \(acc), final model \(r.finalModel ?? "-") (\(r.voters) done votes)",
                         json: r.json())
        } catch let f as ControlFailure { options.fail(f) }
    }
}

/// Writes `contents` with `write`, mapping failures to gossipctl's exit codes.
func writeKey(_ path: String, what: String, force: Bool, _ write: (String, Bool) throws(NoiseError) -> Void) {
    do throws(NoiseError) {
        try write(path, force)
    } catch {
        let hint = error.message.contains("already exists") ? " (pass --force to replace it: every node holding the old key must get the new one)" : ""
        Console.err.line("gossipctl: \(error.message)\(hint)")
        Foundation.exit(ControlExitCode.cannotWrite.rawValue)
    }
}

struct KeygenNetwork: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "network",
        abstract: "Write a new random 32-byte network key (mode 0600). Every node of a network needs the same key (--network-key).")
    @Option(help: "Where to write the key file.") var out: String
    @Flag(help: "Replace an existing file.") var force = false
    func run() throws {
        writeKey(out, what: "network key", force: force) { (p, f) throws(NoiseError) in try NetworkKey.generate().write(to: p, overwrite: f) }
        Console.out.line("wrote network key \(out) (mode 0600): copy it to every node over a channel you trust and pass --network-key \(out)")
    }
}

struct KeygenIdentity: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "identity",
        abstract: "Write a new Curve25519 identity (mode 0600) and print its public key (what --admin-key takes).")
    @Option(help: "Where to write the key file.") var out: String
    @Flag(help: "Replace an existing file.") var force = false
    func run() throws {
        let id = IdentityKey.generate()
        writeKey(out, what: "identity", force: force) { (p, f) throws(NoiseError) in try id.write(to: p, overwrite: f) }
        Console.err.line("wrote identity \(out) (mode 0600); its public key:")
        Console.out.line(id.publicKeyHex)
    }
}

struct Keygen: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create key files: the network key (keygen network) or an identity (keygen identity).",
        subcommands: [KeygenNetwork.self, KeygenIdentity.self])
}

struct IdentityShow: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "show",
        abstract: "Print the public key (64 hex digits) of an identity key file.")
    @Option(name: .customLong("in"), help: "The identity key file.") var input: String
    func run() throws {
        do throws(NoiseError) {
            Console.out.line(try IdentityKey.read(from: input).publicKeyHex)
        } catch {
            Console.err.line("gossipctl: \(error.message)")
            Foundation.exit(ControlExitCode.cannotRead.rawValue)
        }
    }
}

struct Identity: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Inspect identity key files.", subcommands: [IdentityShow.self])
}

struct Gossipctl: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gossipctl",
        abstract: "Drive a gossip node: status, peers, model export, trigger an exchange, stop, wait for the end of training.",
        discussion: """
        Data goes to stdout, diagnostics to stderr. With -o json every command prints one JSON object \
        (on failure: {"error":{"message","exit_code","status","status_code"}}).
        Stop and gossip change the node: send them over --socket (the node's control socket, on its host) or over \
        TCP with --network-key and an --identity the node lists with --admin-key; others get PERMISSION_DENIED (exit 70).
        Exit codes: 0 ok; 1 unexpected failure; 3 wait --converged: not finished within --timeout; 64 usage error; 66 a key file cannot be read or is refused; \
        69 node unreachable or no answer within --timeout; \
        70 the node answered with an error status; 73 the output file could not be written.
        """,
        subcommands: [Status.self, Peers.self, Model.self, Gossip.self, Stop.self, Keygen.self, Identity.self, Wait.self, Plot.self, Watch.self, Pull.self, Push.self])

    // Declared here too so the shared options may come before the command
    // (`gossipctl --endpoint H:P -o json status`) as well as after it.
    @OptionGroup var options: Options
}

Console.setUp(onClosedStdout: .exit)
Gossipctl.main()
