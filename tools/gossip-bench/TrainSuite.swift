// The `train` benchmark suite (not yet implemented).
import Foundation

func runTrainSuite(_ args: [String]) throws {
    warn("gossip-bench: suite 'train' is not implemented yet")
    exit(2)
}
