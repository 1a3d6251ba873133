import Foundation
// TrainingDefaults: the dataset's defaults fill exactly the peer settings that were not given,
// once PeerNode.init has loaded the dataset; the bootstrap's suggestion needs no MNIST rows.
import GossipML
import GossipNet
@testable import GossipNode
import Logging
import Testing

@Suite struct TrainingDefaultsTests {
    let quiet = Logger(label: "t", factory: { _ in SwiftLogNoOpLogHandler() })

    @Test func tableByShape() {
        let digits = TrainingDefaults.forDataset(features: 64, classes: 10)
        #expect(digits.architecture == "64,256,128,10")
        #expect(digits.learningRate == 0.2 && digits.batch == 128 && digits.localSteps == 10 && digits.inputNoise == 0.4)
        #expect(digits.demoPace == .milliseconds(100))
        let images = TrainingDefaults.forDataset(features: 784, classes: 10)
        #expect(images.architecture == "784,256,128,10")
        #expect(images.learningRate == 0.05 && images.batch == 64 && images.localSteps == 20 && images.inputNoise == 0)
        #expect(images.demoPace == .zero)
    }

    @Test func sourceWithoutLoadingRows() throws {
        // An empty folder: the shape of MNIST is known without reading any file.
        let empty = FileManager.default.temporaryDirectory.appendingPathComponent("defaults-\(UInt32.random(in: 0...UInt32.max))").path
        try FileManager.default.createDirectory(atPath: empty, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: empty) }
        #expect(try TrainingDefaults.forSource(.mnist(directory: empty)).architecture == "784,256,128,10")
        #expect(try TrainingDefaults.forSource(.fashionMNIST(directory: empty)).architecture == "784,256,128,10")
        #expect(try TrainingDefaults.forSource(.digits).architecture == "64,256,128,10")
        // A folder that does not exist is refused at once (the bootstrap reads no rows, so
        // this is where a typo in --dataset shows), naming the path.
        #expect { try TrainingDefaults.forSource(.mnist(directory: "/nonexistent-\(empty.count)")) } throws: { e in
            "\(e)".contains("/nonexistent-\(empty.count) is not a folder")
        }
    }

    @Test func peerFillsOnlyUnsetSettings() throws {
        var config = PeerConfig(listen: Endpoint(host: "127.0.0.1", port: 0))
        config.sgd.learningRate = 0.01          // given
        config.sgd.batchSize = 7                // not given: replaced
        config.localSteps = 3                   // not given: replaced
        config.sgd.inputNoise = 0               // not given: replaced
        config.trainingDefaultsFromDataset = [.batch, .localSteps, .inputNoise]
        let node = try PeerNode(config: config, logger: quiet)
        #expect(node.config.sgd.learningRate == 0.01)
        #expect(node.config.sgd.batchSize == 128)
        #expect(node.config.localSteps == 10)
        #expect(node.config.sgd.inputNoise == 0.4)
        #expect(node.config.trainingDefaultsFromDataset.isEmpty)
    }

    @Test func libraryDefaultKeepsValues() throws {
        var config = PeerConfig(listen: Endpoint(host: "127.0.0.1", port: 0))
        config.sgd.batchSize = 7
        config.localSteps = 3
        let node = try PeerNode(config: config, logger: quiet)
        #expect(node.config.sgd.batchSize == 7)
        #expect(node.config.localSteps == 3)
        #expect(node.config.sgd.learningRate == 0.05)
    }
}
