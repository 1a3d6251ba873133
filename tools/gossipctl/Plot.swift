// `gossipctl plot FILE.jsonl... --out curves.svg`: draws the metrics logs that `gossipd peer
// --metrics-file` wrote (accuracy, loss, consensus distance per node over time) as one
// standalone SVG. Argument parsing and output only: reading and rendering live in
// GossipNode (MetricsLogReader, SVGPlot).
import ArgumentParser
import Foundation
import GossipNet
import GossipNode

struct Plot: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Draw accuracy, training loss and consensus distance per node over time from metrics logs (gossipd peer --metrics-file) as a standalone SVG.",
        discussion: """
        Reads every FILE (JSON lines; a truncated last line is skipped with a note), draws one line per node in three \
        panels against seconds since the earliest record, and writes the SVG to --out (- for stdout). \
        Exit codes: 0 ok; 64 usage error; 66 a file cannot be read, a line is malformed (the message names the file and line) \
        or there is nothing to plot; 73 --out cannot be written.
        """)

    @Argument(help: "Metrics logs written by gossipd peer --metrics-file (JSON lines).") var files: [String]
    @Option(help: "Where to write the SVG (- for stdout).") var out: String
    @Option(help: "The picture's title.") var title: String = "gossip training"

    func validate() throws {
        guard !files.isEmpty else { throw ValidationError("give one or more metrics files (gossipd peer --metrics-file FILE), e.g. gossipctl plot peer*.jsonl --out curves.svg") }
        guard !out.isEmpty else { throw ValidationError("--out needs a file name (or - for stdout)") }
    }

    func run() throws {
        let result: (svg: String, records: Int, nodes: Int)
        do {
            result = try SVGPlot.render(files: files, title: title) { Console.err.line("gossipctl: note: \($0)") }
        } catch {
            Console.err.line("gossipctl: \(error)")
            Foundation.exit(ControlExitCode.cannotRead.rawValue)
        }
        if out == "-" {
            _ = Console.out.write(result.svg)
            return
        }
        do {
            try Data(result.svg.utf8).write(to: URL(fileURLWithPath: out), options: .atomic)
        } catch {
            Console.err.line("gossipctl: cannot write the SVG to '\(out)': \((error as NSError).localizedDescription); check that the directory exists and is writable")
            Foundation.exit(ControlExitCode.cannotWrite.rawValue)
        }
        Console.out.line("wrote \(out): \(result.records) records from \(result.nodes) node\(result.nodes == 1 ? "" : "s") in \(files.count) file\(files.count == 1 ? "" : "s") (\(result.svg.utf8.count) bytes)")
    }
}
