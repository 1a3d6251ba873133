// gossipctl pull / push: an external trainer's side of SPEC §5.12 (README "External
// trainers"). Argument parsing and output only; the requests live in GossipNode.Control.
import ArgumentParser
import GossipNode

struct Pull: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write the node's current model to a safetensors file and print its version (for push --version).",
        discussion: "Over --socket the node writes --out itself (same host; nothing but the path crosses the socket). --inline copies the model through the connection and gossipctl writes the file (for a node on another host over --endpoint, which is the default there). Exit 0 ok; 64 usage; 69 unreachable; 70 the node refused (PERMISSION_DENIED off the control socket, UNAVAILABLE while it has no model, FAILED_PRECONDITION on a Swift-trained peer or an unwritable path); 73 --out cannot be written.")
    @OptionGroup var options: Options
    @Option(help: "Where to write the .safetensors file.") var out: String
    @Flag(help: "Copy the model through the connection instead of having the node write the file.") var inline = false
    func run() throws {
        do {
            let c = try options.control()
            let r = try c.pull(to: out, inline: inline || c.socketPath == nil)
            options.emit(text: "pulled version \(r.version) into \(r.path) (\(r.bytes) bytes\(r.inline ? ", through the connection" : ""))",
                         json: r.json())
        } catch let f as ControlFailure { options.fail(f) }
    }
}

struct Push: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Push weights trained from a pull: the node adds (these weights - the pulled ones) to its current model.",
        discussion: "--version is the version the pull printed; the node keeps its last 4 pulls' weights, an older or unknown version is refused (FAILED_PRECONDITION, exit 70: pull again). Tensors are matched by name; another table is FAILED_PRECONDITION, NaN or Inf INVALID_ARGUMENT; neither changes the model. Exit 0 ok; 64 usage; 66 --in cannot be read; 69 unreachable; 70 the node refused.")
    @OptionGroup var options: Options
    @Option(name: .customLong("in"), help: "The .safetensors file with the trained weights.") var input: String
    @Option(help: "Training examples used since the pull (the node's averaging weight follows it).") var samples: UInt64
    @Option(help: "The version printed by the pull this training started from.") var version: UInt64
    @Option(help: "SGD steps since the pull (counted in the node's status).") var steps: UInt64 = 0
    @Flag(help: "Send the weights through the connection instead of having the node read the file.") var inline = false
    func run() throws {
        do {
            let c = try options.control()
            let r = try c.push(from: input, version: version, samples: samples, steps: steps, inline: inline || c.socketPath == nil)
            let moved = String(format: "%.4f%%", r.relativeL2Change * 100)
            options.emit(text: "pushed: the node's model moved \(moved) (relative L2), now version \(r.version)", json: r.json())
        } catch let f as ControlFailure { options.fail(f) }
    }
}
