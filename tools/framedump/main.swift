// framedump: prints gossip frames from a raw byte stream or a pcap capture. Argument parsing
// and output only; decoding and formatting live in GossipInspect (FrameFormatter, Pcap,
// TCPReassembly). `dump` is the default subcommand; more (e.g. `proxy`) can be added.
import ArgumentParser
import Foundation
import GossipNet
import GossipInspect
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
        subcommands: [Dump.self, Proxy.self],
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
                    let text = FrameDump.render(r, verbose: verbose, hex: hex, json: output == .json)
                    Console.out.write(text)
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

struct Proxy: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Forward a node's traffic unchanged and print every frame as it passes (no root needed).",
        discussion: """
        Point clients at --listen instead of the node; each connection is forwarded to --upstream \
        and both directions are printed as frames pass, prefixed with the connection number and \
        direction (c>s: client to server, s>c: server to client). Output modes and filters are \
        those of `framedump dump`. With --record PREFIX the raw bytes of each direction are also \
        written to PREFIX-CONN-c2s.bin and PREFIX-CONN-s2c.bin, which `framedump dump` reads later. \
        The bound address is printed to stderr as 'proxy listening HOST:PORT -> UPSTREAM' (and to \
        --ready-file). Stop with Ctrl-C.
        """)

    @Option(help: "HOST:PORT to listen on (port 0: the OS picks).") var listen: String = "127.0.0.1:0"
    @Option(help: "The node's HOST:PORT to forward to.") var upstream: String
    @Flag(name: [.customShort("V"), .long], help: "Print a field tree per frame.") var verbose = false
    @Flag(name: [.customShort("x"), .long], help: "Print the header and the first 64 payload bytes in hex.") var hex = false
    @Option(name: [.short, .customLong("output")], help: "text or json.") var output: Dump.Format = .text
    @Option(name: .customLong("type"), help: "Only frames of this message type.") var type: String?
    @Option(name: .customLong("request-id"), help: "Only frames with this request id.") var requestID: UInt32?
    @Option(help: "Also write each direction's raw bytes to PREFIX-CONN-c2s.bin / -s2c.bin.") var record: String?
    @Option(help: "Write the bound HOST:PORT to this file once listening.") var readyFile: String?

    func run() throws {
        ignoreSIGPIPE()
        let up: Endpoint, here: Endpoint
        do { up = try Endpoint(parsing: upstream) } catch { throw ValidationError("--upstream '\(upstream)': \(error)") }
        do { here = try Endpoint(parsing: listen) } catch { throw ValidationError("--listen '\(listen)': \(error)") }
        if let type, MessageType(name: type) == nil { throw ValidationError("unknown message type '\(type)'") }
        let printer = LivePrinter(verbose: verbose, hex: hex, json: output == .json,
                                  type: type.flatMap { MessageType(name: $0) }, requestID: requestID, record: record)
        let proxy = FrameProxy(upstream: up) { event in printer.handle(event) }
        let bound: Endpoint
        do { bound = try proxy.start(host: here.host, port: here.port) } catch {
            warn("framedump: cannot listen on \(here): \(error)")
            throw ExitCode(Exit.unreadable)
        }
        warn("proxy listening \(bound) -> \(up)")
        if let readyFile {
            guard FileManager.default.createFile(atPath: readyFile + ".tmp", contents: Data("\(bound)\n".utf8)),
                  rename(readyFile + ".tmp", readyFile) == 0 else {
                warn("framedump: cannot write --ready-file \(readyFile)")
                throw ExitCode(Exit.unreadable)
            }
        }
        let stop = DispatchSemaphore(value: 0)
        let sources = [SIGINT, SIGTERM].map { sig -> DispatchSourceSignal in
            signal(sig, SIG_IGN)
            let s = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            s.setEventHandler { stop.signal() }
            s.resume()
            return s
        }
        stop.wait()
        proxy.stop()
        printer.finish()
        withExtendedLifetime(sources) {}
    }
}

/// Prints proxied frames; serialises output from the proxy's queues.
final class LivePrinter: @unchecked Sendable {
    let verbose: Bool, hex: Bool, json: Bool
    let type: MessageType?, requestID: UInt32?
    let record: String?
    private let lock = NSLock()
    private var dumps: [String: LiveFrameDump] = [:]
    private var files: [String: FileHandle] = [:]

    init(verbose: Bool, hex: Bool, json: Bool, type: MessageType?, requestID: UInt32?, record: String?) {
        self.verbose = verbose; self.hex = hex; self.json = json
        self.type = type; self.requestID = requestID; self.record = record
    }

    func handle(_ event: ProxyEvent) {
        lock.withLock {
            switch event {
            case .opened(let c, let client):
                warn("framedump: connection \(c) from \(client)")
            case .closed(let c, let reason):
                warn("framedump: connection \(c) closed: \(reason)")
                for d in ["c>s", "s>c"] {
                    let key = "#\(c) \(d)"
                    if let e = dumps[key]?.error { warn("framedump: \(key): malformed frame at byte offset \(e.offset ?? 0): \(e)") }
                    dumps[key] = nil
                    try? files[key]?.close()
                    files[key] = nil
                }
            case .data(let c, let dir, let bytes):
                let d = dir == .clientToServer ? "c>s" : "s>c"
                let key = "#\(c) \(d)"
                if let record {
                    if files[key] == nil {
                        let path = "\(record)-\(c)-\(dir == .clientToServer ? "c2s" : "s2c").bin"
                        if !FileManager.default.createFile(atPath: path, contents: nil) {
                            warn("framedump: cannot create \(path); not recording this direction")
                        }
                        files[key] = FileHandle(forWritingAtPath: path)
                    }
                    files[key]?.write(Data(bytes))
                }
                let dump = dumps[key] ?? LiveFrameDump(direction: key)
                dumps[key] = dump
                var out = ""
                for r in dump.feed(bytes) where FrameDump.matches(r, type: type, requestID: requestID) {
                    out += FrameDump.render(r, verbose: verbose, hex: hex, json: json)
                }
                if !out.isEmpty { Console.out.write(out) }
            }
        }
    }

    func finish() {
        lock.withLock { for f in files.values { try? f.close() } }
    }
}

func warn(_ s: String) { Console.err.line(s) }

Console.setUp(onClosedStdout: .exit)
FrameDumpCommand.main()
