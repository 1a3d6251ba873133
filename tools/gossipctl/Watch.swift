// gossipctl watch: a live view of the whole network from one endpoint. Argument parsing and
// output only; the walk, the polls, the distance and the rendering live in GossipNode/Watch.swift.
import ArgumentParser
import Foundation
import GossipNet
import GossipNode
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

struct Watch: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Live view of the network: walks the peer lists from --endpoint, polls every node's status each --interval.",
        discussion: """
        One row per node: endpoint, role, phase, round, loss, accuracy, exchanges ok/failed, bytes in/out, \
        last seen. A node that stops answering stays listed as DOWN Ns (seconds since it last answered); \
        nodes named in peer lists (and a peer's bootstrap) are added as they appear. Every --distance-every \
        ticks the peers' models are fetched (GetModel) and the largest pairwise relative L2 distance is shown \
        in the footer (peers of another schema than the majority are skipped). On a terminal the view is \
        redrawn in place; otherwise one plain block per tick (blank line between blocks), flushed each tick. \
        -o json prints one JSON object per tick per line. --poll-timeout bounds each status poll, --timeout each GetModel. Ctrl-C exits 0. \
        Exit: 0 done (--count reached, or Ctrl-C); 64 usage; 66 key file; 69 the first endpoint did not answer the first poll.
        """)
    @OptionGroup var options: Options
    @Option(help: "Seconds between polls.") var interval: Double = 1
    @Option(help: "Stop after this many ticks (default: run until Ctrl-C).") var count: Int?
    @Option(help: "Compute the largest pairwise model distance on the first tick and every N ticks after (0: never).")
    var distanceEvery: Int = 5
    @Option(help: "Watch at most this many nodes (1...4096); more endpoints are counted, not polled.")
    var maxNodes: Int = WatchTable.defaultMaxNodes
    @Option(help: "At most this many requests in flight at once (1...64).") var parallel: Int = 16
    @Option(help: "Seconds each status poll may take (at most --timeout): a node slower than this is shown DOWN for that tick, so one hung node never stalls the view. --timeout bounds each GetModel.")
    var pollTimeout: Double = 2

    func validate() throws {
        guard interval > 0, interval <= 3600 else { throw ValidationError("--interval must be a number of seconds in (0, 3600], got \(interval)") }
        if let count, count < 1 { throw ValidationError("--count must be at least 1, got \(count)") }
        guard distanceEvery >= 0 else { throw ValidationError("--distance-every must be 0 (never) or more, got \(distanceEvery)") }
        guard (1...WatchTable.hardMaxNodes).contains(maxNodes) else { throw ValidationError("--max-nodes must be in 1...\(WatchTable.hardMaxNodes), got \(maxNodes)") }
        guard (1...64).contains(parallel) else { throw ValidationError("--parallel must be in 1...64, got \(parallel)") }
        if options.socket != nil {
            throw ValidationError("watch walks the network over TCP: give --endpoint HOST:PORT (a control socket reaches one node only)")
        }
        guard options.endpoint != nil else { throw ValidationError("give --endpoint HOST:PORT: the node to start the walk from") }
        guard options.timeout > 0 else { throw ValidationError("--timeout must be positive") }
        guard pollTimeout > 0 else { throw ValidationError("--poll-timeout must be positive, got \(pollTimeout)") }
    }

    func run() throws {
        let security: ChannelSecurity?
        do throws(ControlFailure) {
            security = try clientSecurity(networkKey: options.networkKey, identity: options.identity)
        } catch { options.fail(error) }
        let client = RPCClient(security: security)
        defer { client.close() }
        let watch: NetworkWatch
        do throws(WatchPollError) {
            watch = try NetworkWatch.live(seed: options.endpoint!, client: client,
                                          statusTimeout: .milliseconds(Int64(min(pollTimeout, options.timeout) * 1000)),
                                          timeout: .milliseconds(Int64(options.timeout * 1000)),
                                          maxNodes: maxNodes, parallel: parallel, distanceEvery: distanceEvery)
        } catch {
            throw ValidationError("--endpoint: \(error.message)")
        }
        // Ctrl-C ends the view normally. A process started from a thread that blocks signals
        // (a Dispatch worker, as in a test runner) inherits that mask: unblock SIGINT here.
        signal(SIGINT) { _ in _exit(0) }
        var interrupt = sigset_t()
        sigemptyset(&interrupt)
        sigaddset(&interrupt, SIGINT)
        pthread_sigmask(SIG_UNBLOCK, &interrupt, nil)
        let terminal = isatty(1) == 1 && options.output == .text
        let start = Date()
        var tick = 0
        while true {
            tick += 1
            watch.step()
            if tick == 1, let seed = watch.table.nodes[watch.seed], !seed.up {
                options.fail(ControlFailure(exitCode: .unreachable,
                    message: "\(watch.seed) did not answer (\(seed.error ?? "no answer")): check --endpoint (and --network-key for an encrypted network)",
                    status: nil))
            }
            let snap = watch.snapshot
            switch options.output {
            case .json:
                Console.out.line(WatchRender.json(snap))
            case .text:
                let block = WatchRender.text(snap).joined(separator: "\n")
                Console.out.write(terminal ? WatchRender.clearScreen + block + "\n" : block + "\n\n")
            }
            if Console.out.isClosed { return }
            if let count, tick >= count { return }
            let next = start.addingTimeInterval(Double(tick) * interval)
            let wait = next.timeIntervalSinceNow
            if wait > 0 { Thread.sleep(forTimeInterval: wait) }
        }
    }
}
