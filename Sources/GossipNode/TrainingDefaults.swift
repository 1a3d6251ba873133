// Training defaults chosen from a dataset's shape: one table shared by `gossipd demo`, a peer
// started by hand (`gossipd peer` fills every training option it was not given from it once
// the dataset is loaded) and the bootstrap (which suggests the architecture when it is given
// neither --arch nor --model), so a network started by hand trains like the demo.
import Foundation
import GossipML
import GossipWire

/// Default training settings for a dataset's shape.
public struct TrainingDefaults: Sendable, Equatable {
    public var architecture: String
    /// Rounds the demo runs (a peer by hand has no default: it trains until stopped or converged).
    public var rounds: Int
    public var localSteps: Int
    public var learningRate: Float
    public var batch: Int
    public var inputNoise: Float
    /// The demo's minimum round time, so its progress can be watched. A peer started by hand
    /// runs flat out (pace 0) unless it is given `--pace-ms`.
    public var demoPace: Duration

    /// Settings that train well: for small tabular inputs (the bundled 8x8 digits) a
    /// 256,128 MLP with input noise, lr 0.2 and batch 128 (tuned on a validation split of the
    /// training rows, see gossip-bench gossip-sim); for 28x28 images (784 features and more)
    /// the MNIST recipe: the same hidden layers, lr 0.05, batch 64, 20 steps per round.
    public static func forDataset(features: Int, classes: Int) -> TrainingDefaults {
        if features >= 784 {
            return TrainingDefaults(architecture: "\(features),256,128,\(classes)", rounds: 150, localSteps: 20,
                                    learningRate: 0.05, batch: 64, inputNoise: 0, demoPace: .zero)
        }
        return TrainingDefaults(architecture: "\(features),256,128,\(classes)", rounds: 60, localSteps: 10,
                                learningRate: 0.2, batch: 128, inputNoise: 0.4, demoPace: .milliseconds(100))
    }

    /// The defaults of a dataset source, loading as little as possible: the bundled digits
    /// and IDX directories (MNIST, Fashion-MNIST) are known by shape without reading their
    /// rows; a CSV file is loaded.
    public static func forSource(_ source: DatasetSource) throws -> TrainingDefaults {
        switch source {
        case .digits: return forDataset(features: 64, classes: 10)
        case .mnist(let dir), .fashionMNIST(let dir):
            // The files are read only by the peers; a path that is not a folder is refused here
            // already, so a typo does not wait for the first peer to surface.
            var isDir: ObjCBool = false
            guard FileManager.default.fileExists(atPath: dir, isDirectory: &isDir), isDir.boolValue else {
                throw MLError(.io, "\(source): \(dir) is not a folder; give the folder that holds the IDX files (train-images-idx3-ubyte[.gz] ...)")
            }
            return forDataset(features: 784, classes: 10)
        case .csv:
            let split = try source.load()
            return forDataset(features: split.train.featureCount, classes: split.train.classCount)
        }
    }

    /// One line per dataset family, for `--help` texts.
    public static let helpText = "digits (64 features): 64,256,128,10, lr 0.2, batch 128, 10 local steps, input noise 0.4; "
        + "28x28 images (mnist, fashion-mnist): 784,256,128,10, lr 0.05, batch 64, 20 local steps, input noise 0"

    /// The training settings a peer takes from its dataset when it was not given them.
    public struct Settings: OptionSet, Sendable, Hashable {
        public let rawValue: UInt8
        public init(rawValue: UInt8) { self.rawValue = rawValue }
        public static let learningRate = Settings(rawValue: 1 << 0)
        public static let batch = Settings(rawValue: 1 << 1)
        public static let localSteps = Settings(rawValue: 1 << 2)
        public static let inputNoise = Settings(rawValue: 1 << 3)
        public static let all: Settings = [.learningRate, .batch, .localSteps, .inputNoise]
    }
}

extension PeerConfig {
    /// Replaces the settings named in `trainingDefaultsFromDataset` with `d`'s and clears the set.
    public mutating func applyTrainingDefaults(_ d: TrainingDefaults) {
        let fill = trainingDefaultsFromDataset
        if fill.contains(.learningRate) { sgd.learningRate = d.learningRate }
        if fill.contains(.batch) { sgd.batchSize = d.batch }
        if fill.contains(.inputNoise) { sgd.inputNoise = d.inputNoise }
        if fill.contains(.localSteps) { localSteps = d.localSteps }
        trainingDefaultsFromDataset = []
    }
}
