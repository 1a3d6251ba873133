// framedump: prints gossip frames from a raw byte stream or a pcap capture. Argument parsing
// and output only; decoding and formatting live in GossipWire (FrameFormatter, Pcap,
// TCPReassembly). `dump` is the default subcommand; more (e.g. `proxy`) can be added.
import ArgumentParser
import Foundation
import GossipWire

/// Exit codes, documented in --help.
enum Exit {
    static let ok: Int32 = 0
    static let malformed: Int32 = 1
    static let unreadable: Int32 = 2
    static let usage: Int32 = 64
}


struct FrameDumpCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "framedump",
        abstract: "Print gossip wire frames from a raw byte stream or a pcap capture.",
        discussion: """
        Exit codes: 0 success; 1 a malformed frame (with --check: at the first one, its byte \
        offset on stderr); 2 the input could not be read or is not a supported capture; \
        64 usage error.
        """,
        subcommands: [Dump.self],
        defaultSubcommand: Dump.self)
}

struct Dump: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Decode and print frames (the default subcommand).",
        discussion: """
        INPUT is a file of raw frames as sent on a connection, or a classic libpcap capture \
        (tcpdump -w; both byte orders, micro- or nanosecond; link types Ethernet, Linux cooked \
        SLL/SLL2, loopback, raw IP; IPv4/IPv6). Captures are reassembled per TCP direction. \
        Reads stdin when INPUT is '-' or absent.

        Default output: one line per frame: @OFFSET [SRC > DST] TYPE request|reply|error \
        id=N flags=F len=FRAME raw=CHUNK/MESSAGE [status=NAME(N)]. Flags: Z compressed, \
        S shuffled, R response, E error, END end of stream, C checksummed. Tensors are printed \
        as summaries (dtype, shape, min/max/mean, NaN/Inf counts), never as hex.

        Exit codes: 0 success; 1 a malformed frame was found (the error and its byte offset \
        go to stderr; with --check decoding stops there); 2 unreadable input or unsupported \
        capture; 64 usage error.
        """)

    enum Format: String, ExpressibleByArgument { case text, json }

    @Argument(help: "Raw frame stream or pcap file ('-' or absent: stdin).")
    var input: String?

    @Flag(name: [.customShort("V"), .long], help: "Print a field tree per frame (header fields and decoded body).")
    var verbose = false

    @Flag(name: [.customShort("x"), .long], help: "Print the header and the first 64 payload bytes (as sent) in hex.")
    var hex = false

    @Option(name: [.short, .customLong("output")], help: "Output format: text or json (newline-delimited JSON, one object per frame).")
    var output: Format = .text

    @Option(name: .customLong("type"), help: "Only frames of this message type (name, e.g. GossipExchange, or number).")
    var type: String?

    @Option(name: .customLong("request-id"), help: "Only frames with this request id.")
    var requestID: UInt32?

    @Flag(help: "Validate only: print nothing on success; exit 1 at the first malformed frame, naming its byte offset on stderr.")
    var check = false

    func validate() throws {
        if let type, MessageType(name: type) == nil {
            throw ValidationError("unknown message type '\(type)'; use a name (Register, GetModel, GossipExchange, Status, Ping, Stop, TriggerGossip) or a number")
        }
    }

    func run() throws {
        let bytes: [UInt8]
        if input == nil || input == "-" {
            bytes = [UInt8](FileHandle.standardInput.readDataToEndOfFile())
        } else if let d = FileManager.default.contents(atPath: input!) {
            bytes = [UInt8](d)
        } else {
            warn("framedump: cannot read \(input!)")
            throw ExitCode(Exit.unreadable)
        }
        let streams: [DumpedStream]
        do {
            streams = try FrameDump.decodeInput(bytes)
        } catch {
            warn("framedump: \(error)")
            throw ExitCode(Exit.unreadable)
        }
        let filterType = type.flatMap { MessageType(name: $0) }
        var failed = false
        for s in streams {
            if !check {
                for r in s.records where FrameDump.matches(r, type: filterType, requestID: requestID) {
                    var text: String
                    switch output {
                    case .json: text = FrameDump.json(r, verbose: verbose) + "\n"
                    case .text: text = verbose ? FrameDump.tree(r) : FrameDump.line(r) + "\n"
                    }
                    if hex && output == .text { text += FrameDump.hex(r) }
                    FileHandle.standardOutput.write(Data(text.utf8))
                }
            }
            if s.hasGap { warn("framedump: \(s.direction ?? "stream"): the capture misses bytes; frames after the gap are not shown") }
            if let e = s.error {
                warn("framedump: \(s.direction.map { $0 + ": " } ?? "")malformed frame at byte offset \(e.offset ?? 0): \(e)")
                failed = true
                if check { throw ExitCode(Exit.malformed) }
            }
        }
        if failed { throw ExitCode(Exit.malformed) }
    }
}

func warn(_ s: String) { FileHandle.standardError.write(Data((s + "\n").utf8)) }
FrameDumpCommand.main()
