// gossipctl: drive a node from scripts or by hand. Argument parsing and output only; the
// requests and their rendering live in GossipNode.Control.
import ArgumentParser
import Foundation
import GossipNet
import GossipNode

enum OutputFormat: String, ExpressibleByArgument, CaseIterable { case text, json }

struct Options: ParsableArguments {
    @Option(help: "The node's HOST:PORT.") var endpoint: String
    @Option(help: "Seconds to wait for the node's answer (longer than a node's 10 s exchange deadline).") var timeout: Double = 20
    @Option(name: [.short, .customLong("output")], help: "text (for people) or json (one object, for scripts).")
    var output: OutputFormat = .text

    func control() throws -> Control {
        let ep: Endpoint
        do { ep = try Endpoint(parsing: endpoint) } catch { throw ValidationError("--endpoint '\(endpoint)': \(error)") }
        guard timeout > 0 else { throw ValidationError("--timeout must be positive") }
        return Control(endpoint: ep, timeout: .milliseconds(Int64(timeout * 1000)))
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
            options.emit(text: s.peers.joined(separator: "\n"), json: jsonText(["endpoint": s.endpoint, "peers": s.peers]))
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
            options.emit(text: "stopping \(c.endpoint)", json: jsonText(["endpoint": c.endpoint.description, "stopping": true]))
        } catch let f as ControlFailure { options.fail(f) }
    }
}

struct Gossipctl: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gossipctl",
        abstract: "Drive a gossip node: status, peers, model export, trigger an exchange, stop.",
        discussion: """
        Data goes to stdout, diagnostics to stderr. With -o json every command prints one JSON object \
        (on failure: {"error":{"message","exit_code","status","status_code"}}).
        Exit codes: 0 ok; 1 unexpected failure; 64 usage error; 69 node unreachable or no answer within --timeout; \
        70 the node answered with an error status; 73 the output file could not be written.
        """,
        subcommands: [Status.self, Peers.self, Model.self, Gossip.self, Stop.self])

    // Declared here too so the shared options may come before the command
    // (`gossipctl --endpoint H:P -o json status`) as well as after it.
    @OptionGroup var options: Options
}

Console.setUp(onClosedStdout: .exit)
Gossipctl.main()
