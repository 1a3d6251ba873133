// Tests of dataset loaders: IDX (raw and gzip) happy path and corruptions, CSV, bundled digits.

import Foundation
import Testing
@testable import GossipML

@Suite struct DatasetTests {
    let dir: String

    init() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("gossip-ds-\(getpid())-\(UInt32.random(in: 0...UInt32.max))").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    }

    func write(_ name: String, _ bytes: [UInt8]) -> String {
        let p = dir + "/" + name
        _ = FileManager.default.createFile(atPath: p, contents: Data(bytes))
        return p
    }

    static func be32(_ v: Int) -> [UInt8] { [UInt8(v >> 24 & 0xff), UInt8(v >> 16 & 0xff), UInt8(v >> 8 & 0xff), UInt8(v & 0xff)] }
    static func images(_ n: Int) -> [UInt8] { [0, 0, 8, 3] + be32(n) + be32(2) + be32(2) + (0..<(n * 4)).map { UInt8($0 * 17 % 256) } }
    static func labels(_ n: Int) -> [UInt8] { [0, 0, 8, 1] + be32(n) + (0..<n).map { UInt8($0 % 10) } }

    func expectInvalid(images: [UInt8], labels: [UInt8], _ fragment: String) {
        let ip = write("i-\(UInt32.random(in: 0...UInt32.max))", images)
        let lp = write("l-\(UInt32.random(in: 0...UInt32.max))", labels)
        do {
            _ = try DatasetLoader.loadIDX(images: ip, labels: lp, name: "t")
            Issue.record("expected an error containing '\(fragment)'")
        } catch let e as MLError {
            #expect(e.kind == .invalidDataset)
            #expect(e.message.contains(fragment), "\(e.message)")
        } catch {
            Issue.record("unexpected \(error)")
        }
    }

    @Test func idxLoadsRawAndGzip() throws {
        let ip = write("img", Self.images(3)), lp = write("lab.gz", DatasetLoader.gzip(Self.labels(3)))
        let d = try DatasetLoader.loadIDX(images: ip, labels: lp, name: "t")
        #expect(d.count == 3 && d.featureCount == 4 && d.labels == [0, 1, 2])
        #expect(d.features[1] == Float(17) / 255)
    }

    @Test func idxCorruptionsGiveClearErrors() {
        expectInvalid(images: [0, 0, 8, 1] + Array(Self.images(3).dropFirst(4)), labels: Self.labels(3), "magic")
        expectInvalid(images: Self.labels(3), labels: Self.labels(3), "magic")
        expectInvalid(images: Self.images(3), labels: Self.images(3), "magic")
        expectInvalid(images: [0, 0, 9, 3] + Array(Self.images(3).dropFirst(4)), labels: Self.labels(3), "magic")
        expectInvalid(images: Array(Self.images(3).dropLast(1)), labels: Self.labels(3), "truncated")
        expectInvalid(images: Array(Self.images(3).prefix(10)), labels: Self.labels(3), "truncated")
        expectInvalid(images: [0, 0], labels: Self.labels(3), "truncated")
        expectInvalid(images: Self.images(3) + [1], labels: Self.labels(3), "unexpected bytes")
        expectInvalid(images: Self.images(3), labels: Self.labels(4), "3 images")
        let gz = DatasetLoader.gzip(Self.images(50))
        expectInvalid(images: Array(gz.prefix(gz.count / 2)), labels: Self.labels(50), "truncated gzip")
        expectInvalid(images: [0x1f, 0x8b, 0, 0, 0, 0, 0, 0], labels: Self.labels(50), "gzip")
    }

    @Test func missingFilesAndDirectories() {
        #expect(throws: MLError.self) { try DatasetLoader.loadIDX(images: dir + "/nope", labels: dir + "/nope2", name: "t") }
        #expect(throws: MLError.self) { try DatasetSource.mnist(directory: dir + "/nodir").load() }
    }

    @Test func idxDirectoryLoads() throws {
        _ = write("train-images-idx3-ubyte.gz", DatasetLoader.gzip(Self.images(5)))
        _ = write("train-labels-idx1-ubyte.gz", DatasetLoader.gzip(Self.labels(5)))
        _ = write("t10k-images-idx3-ubyte", Self.images(2))
        _ = write("t10k-labels-idx1-ubyte", Self.labels(2))
        let s = try DatasetSource(parsing: "fashion-mnist:" + dir).load()
        #expect(s.train.count == 5 && s.test.count == 2)
        #expect(s.preprocessing["dataset"] == "fashion-mnist")
    }

    @Test func csvParsingAndLabelColumn() throws {
        let p = write("t.csv", Array("a,target,b\n1,0,2\n3,1,4\n5,1,6\n7,0,8\n9,1,10\n11,0,12\n".utf8))
        let s = try DatasetSource(parsing: "csv:" + p).load()
        #expect(s.train.featureCount == 2 && s.train.count + s.test.count == 6 && s.test.count == 1)
        #expect(s.train.labels == [0, 1, 1, 0, 1])
        let s2 = try DatasetSource(parsing: "csv:" + p + "#b").load()
        #expect(s2.train.classCount == 13)
        let sk = write("sk.csv", Array("3,2,x,y\n1.0,2.0,0\n1.5,2.5,1\n0.5,0.5,1\n".utf8))
        #expect(try DatasetSource(parsing: "csv:" + sk).load().train.featureCount == 2)
        let ragged = write("r.csv", Array("1,2,0\n1,0\n".utf8))
        #expect(throws: MLError.self) { try DatasetSource.csv(path: ragged, labelColumn: nil).load() }
        let badLabel = write("b.csv", Array("1,2,0.5\n1,2,1\n".utf8))
        #expect(throws: MLError.self) { try DatasetSource.csv(path: badLabel, labelColumn: nil).load() }
        #expect(throws: MLError.self) { try DatasetSource(parsing: "imagenet") }
        #expect(try DatasetSource(parsing: "mnist:/x") == .mnist(directory: "/x"))
    }

    @Test func bundledDigits() throws {
        let s = try DatasetSource.digits.load()
        #expect(s.train.count == 1500 && s.test.count == 297)
        #expect(s.train.featureCount == 64 && s.train.classCount == 10)
        #expect(s.train.labels.prefix(3) == [0, 1, 2])
        #expect(s.train.features.allSatisfy { $0 >= 0 && $0 <= 1 })
        #expect(s.preprocessing["input_scale"] == "0.0625")
    }
}
