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
        Exit codes: 0 success; 1 a malformed frame, or an encrypted record that failed \
        authentication with --keylog (with --check: at the first one, its byte offset on \
        stderr); 2 the input or the key log could not be read, or the input is not a supported \
        capture; 64 usage error.
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

        Encrypted sessions (Noise_XXpsk3_25519_AESGCM_SHA256, SPEC §13) are recognised by their \
        handshake: each handshake message prints as @OFFSET [DIR] noise handshake msg=N len=L \
        [e=EPHEMERAL], each record as @OFFSET [DIR] noise record=N len=L encrypted, no key log. \
        With --keylog FILE (written by gossipd --keylog-file) the records of the sessions it \
        names are decrypted and their frames print as in a plaintext session (offsets are then \
        offsets in the decrypted stream).

        Exit codes: 0 success; 1 a malformed frame was found, or a record failed authentication \
        (the error and its byte offset go to stderr; with --check decoding stops there); 2 \
        unreadable input, key log or unsupported capture; 64 usage error.
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

    @Option(name: .customLong("keylog"), help: "Key log (gossipd --keylog-file): decrypt the Noise sessions it names.")
    var keyLog: String?

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
        var log: NoiseKeyLog?
        if let keyLog {
            do { log = try NoiseKeyLog(contentsOf: keyLog) } catch {
                warn("framedump: \(error)")
                throw ExitCode(Exit.unreadable)
            }
            for w in log!.warnings { warn("framedump: \(keyLog): \(w)") }
        }
        let streams: [DumpedStream]
        do {
            streams = try FrameDump.decodeInput(bytes, keyLog: log)
        } catch {
            warn("framedump: \(error)")
            throw ExitCode(Exit.unreadable)
        }
        let filterType = type.flatMap { MessageType(name: $0) }
        var failed = false
        for s in streams {
            if !check {
                for item in s.items where FrameDump.matches(item, type: filterType, requestID: requestID) {
                    Console.out.write(FrameDump.render(item, verbose: verbose, hex: hex, json: output == .json))
                }
            }
            if s.hasGap { warn("framedump: \(s.direction ?? "stream"): the capture misses bytes; frames after the gap are not shown") }
            if let e = s.error {
                warn("framedump: \(s.direction.map { $0 + ": " } ?? "")malformed frame at byte offset \(e.offset ?? 0): \(e)")
                failed = true
                if check { throw ExitCode(Exit.malformed) }
            }
            if log != nil, s.items.contains(where: { if case .noise(let n) = $0, case .record(_, .notInKeyLog) = n.kind { true } else { false } }) {
                warn("framedump: \(s.direction.map { $0 + ": " } ?? "")this session is not in the key log \(keyLog!); its records are shown encrypted")
            }
            if let e = s.noiseError {
                warn("framedump: \(s.direction.map { $0 + ": " } ?? "")\(e)")
                failed = true
                if check { throw ExitCode(Exit.malformed) }
            }
        }
        if log == nil, !check, streams.contains(where: { $0.noiseRole != nil }) {
            warn("framedump: the capture holds encrypted (Noise) sessions; to see their frames pass --keylog FILE, the key log a node writes with --keylog-file FILE")
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
        those of `framedump dump`, and so is the output for encrypted sessions: with --keylog FILE \
        the key log is re-read when a session needs its keys (a node appends its line at \
        handshake time); records wait for their line (looked for again 4 times a second) and \
        show encrypted if it has not appeared when the connection closes. \
        With --record PREFIX the raw bytes of each direction are also \
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
    @Option(name: .customLong("keylog"), help: "Key log (gossipd --keylog-file), re-read as sessions start: decrypt the sessions it names.") var keyLog: String?

    func run() throws {
        ignoreSIGPIPE()
        let up: Endpoint, here: Endpoint
        do { up = try Endpoint(parsing: upstream) } catch { throw ValidationError("--upstream '\(upstream)': \(error)") }
        do { here = try Endpoint(parsing: listen) } catch { throw ValidationError("--listen '\(listen)': \(error)") }
        if let type, MessageType(name: type) == nil { throw ValidationError("unknown message type '\(type)'") }
        let printer = LivePrinter(verbose: verbose, hex: hex, json: output == .json,
                                  type: type.flatMap { MessageType(name: $0) }, requestID: requestID, record: record,
                                  keyLog: keyLog.map { NoiseKeyLogFile(path: $0) })
        if let keyLog, !FileManager.default.fileExists(atPath: keyLog) {
            warn("framedump: key log \(keyLog) does not exist yet; it is read when sessions start")
        }
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
        // Sessions whose records wait for their key log line are looked up again 4 times a second.
        let retry = DispatchSource.makeTimerSource(queue: .global())
        if keyLog != nil {
            retry.schedule(deadline: .now() + .milliseconds(250), repeating: .milliseconds(250))
            retry.setEventHandler { printer.retryKeys() }
            retry.resume()
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
        if keyLog != nil { retry.cancel() }
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
    let keyLog: NoiseKeyLogFile?
    private let lock = NSLock()
    private var connections: [Int: ConnectionDump] = [:]
    private var files: [String: FileHandle] = [:]

    init(verbose: Bool, hex: Bool, json: Bool, type: MessageType?, requestID: UInt32?, record: String?, keyLog: NoiseKeyLogFile?) {
        self.verbose = verbose; self.hex = hex; self.json = json
        self.type = type; self.requestID = requestID; self.record = record; self.keyLog = keyLog
    }

    /// The decoder of connection `c` (both directions), made on first use.
    private func connection(_ c: Int) -> ConnectionDump {
        if let d = connections[c] { return d }
        var provider: (@Sendable () -> NoiseKeyLog)?
        if let file = keyLog {
            provider = {
                let (log, warnings) = file.current()
                for w in warnings { warn("framedump: \(file.path): \(w)") }
                return log
            }
        }
        let d = ConnectionDump(first: "#\(c) c>s", second: "#\(c) s>c", keyLog: provider)
        connections[c] = d
        return d
    }

    private func emit(_ outputs: [ConnectionDump.Output]) {
        var out = ""
        for o in outputs where FrameDump.matches(o.item, type: type, requestID: requestID) {
            out += FrameDump.render(o.item, verbose: verbose, hex: hex, json: json)
        }
        if !out.isEmpty { Console.out.write(out) }
    }

    func handle(_ event: ProxyEvent) {
        lock.withLock {
            switch event {
            case .opened(let c, let client):
                warn("framedump: connection \(c) from \(client)")
            case .closed(let c, let reason):
                let conn = connection(c)
                emit(conn.finish())
                connections[c] = nil
                warn("framedump: connection \(c) closed: \(reason)")
                for (side, d) in [(ConnectionDump.Side.first, "c>s"), (.second, "s>c")] {
                    let key = "#\(c) \(d)"
                    if let e = conn.frameError(side) { warn("framedump: \(key): malformed frame at byte offset \(e.offset ?? 0): \(e)") }
                    if let e = conn.noiseError(side) { warn("framedump: \(key): \(e)") }
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
                emit(connection(c).feed(bytes, from: dir == .clientToServer ? .first : .second))
            }
        }
    }

    func finish() {
        lock.withLock { for f in files.values { try? f.close() } }
    }

    /// Looks again for the keys of sessions whose records wait (their connection may be
    /// quiet while the node writes its key log line); the proxy calls it on a timer.
    func retryKeys() {
        lock.withLock {
            for c in connections.keys.sorted() where connections[c]!.isWaitingForKeys {
                emit(connections[c]!.retryKeys())
            }
        }
    }
}

func warn(_ s: String) { Console.err.line(s) }

Console.setUp(onClosedStdout: .exit)
FrameDumpCommand.main()
