// gossipd's side of the metrics log and the demo's plot: open `--metrics-file` at start (a
// path that cannot be opened stops the daemon at once, exit 73, before it loads anything).
import Foundation
import GossipNet
import GossipNode
import Logging

/// Opens `--metrics-file` for appending; prints why and exits 73 when it cannot be opened.
func openMetricsLog(_ path: String?, logger: Logger) -> MetricsLog? {
    guard let path else { return nil }
    do throws(MetricsLogError) {
        let log = try MetricsLog(path: path) { [logger] in logger.warning("\($0)") }
        logger.info("metrics log", metadata: ["path": "\(path)"])
        return log
    } catch {
        Console.err.line("gossipd: \(error.message)")
        Foundation.exit(73)
    }
}
