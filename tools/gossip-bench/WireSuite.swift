// The `wire` benchmark suite (not yet implemented).
import Foundation

func runWireSuite(_ args: [String]) throws {
    warn("gossip-bench: suite 'wire' is not implemented yet")
    exit(2)
}
