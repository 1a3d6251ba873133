// The `net` benchmark suite (not yet implemented).
import Foundation

func runNetSuite(_ args: [String]) throws {
    warn("gossip-bench: suite 'net' is not implemented yet")
    exit(2)
}
