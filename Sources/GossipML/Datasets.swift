// Datasets: the in-memory Dataset, gzip via zlib, IDX (MNIST/Fashion-MNIST) and CSV loaders,
// the bundled digits set, and the source/split description that travels into safetensors.
//
// Bundled data provenance (Resources/digits.csv.gz):
//   scikit-learn 1.9.1 wheel member sklearn/datasets/data/digits.csv.gz, unchanged
//   (57,523 bytes, SHA-256 09f66e6debdee2cd2b5ae59e0d6abbb73fc2b0e0185d2e1957e9ebb51e23aa22).
//   UCI "Optical Recognition of Handwritten Digits" (E. Alpaydin, C. Kaynak, 1998), the
//   optdigits.tes part: 1,797 rows, 64 integer features 0..16 (8x8 image, row-major), label
//   0..9 in the last column, no header. Licenses: scikit-learn BSD-3-Clause; UCI data CC BY 4.0.
//
// Splits and normalisation (recorded in DatasetSplit.preprocessing):
//   digits        train rows 0..<1500, test rows 1500..<1797 (297); x' = x / 16.
//   mnist, fashion-mnist  official train (60,000) / t10k (10,000) files; x' = x / 255.
//   csv:FILE      train = first rows, test = last round(16.5%) rows (297 of 1797 for digits);
//                 x' = (x - mean_j) / std_j per feature j, mean/std over the train rows.
//   General form: x' = (x * input_scale - input_mean) / input_std, where input_mean and
//   input_std are one number or a comma-separated list with one value per feature.

import CZlib
import Foundation

/// Rows of float features with small integer labels, row-major.
public struct Dataset: Sendable {
    /// Features, row-major `[count * featureCount]`, already normalised.
    public let features: [Float]
    /// Class labels in 0..<classCount, one per row.
    public let labels: [UInt8]
    /// Features per row.
    public let featureCount: Int
    /// Number of classes (labels are below it).
    public let classCount: Int
    /// Human-readable name, e.g. `mnist-train`.
    public let name: String

    /// Number of rows.
    public var count: Int { labels.count }

    /// Creates a dataset, checking sizes and label range.
    ///
    /// - Throws: `MLError.invalidDataset` when `features.count != labels.count * featureCount`
    ///   or a label is `>= classCount`.
    public init(name: String, features: [Float], labels: [UInt8], featureCount: Int, classCount: Int) throws {
        guard featureCount > 0, features.count == labels.count * featureCount else {
            throw MLError(.invalidDataset, "dataset '\(name)': \(features.count) feature values do not make \(labels.count) rows of \(featureCount); pass row-major features")
        }
        if let bad = labels.first(where: { Int($0) >= classCount }) {
            throw MLError(.invalidDataset, "dataset '\(name)': label \(bad) is not below the class count \(classCount)")
        }
        self.init(unchecked: name, features: features, labels: labels, featureCount: featureCount, classCount: classCount)
    }

    init(unchecked name: String, features: [Float], labels: [UInt8], featureCount: Int, classCount: Int) {
        self.name = name
        self.features = features
        self.labels = labels
        self.featureCount = featureCount
        self.classCount = classCount
    }

    /// The rows at `indices`, in that order. Precondition: every index is in 0..<count.
    public func subset(_ indices: [Int]) -> Dataset {
        var f = [Float]()
        f.reserveCapacity(indices.count * featureCount)
        var l = [UInt8]()
        l.reserveCapacity(indices.count)
        for i in indices {
            precondition(i >= 0 && i < count, "Dataset.subset: index \(i) out of range 0..<\(count)")
            f.append(contentsOf: features[(i * featureCount)..<((i + 1) * featureCount)])
            l.append(labels[i])
        }
        return Dataset(unchecked: name, features: f, labels: l, featureCount: featureCount, classCount: classCount)
    }

    /// Whether rows fit `arch` (feature count equals its input, classes fit its output).
    public func fits(_ arch: MLPArchitecture) -> Bool {
        featureCount == arch.inputSize && classCount <= arch.outputSize
    }

    func requireFits(_ arch: MLPArchitecture) throws {
        guard featureCount == arch.inputSize else {
            throw MLError(.schemaMismatch, "dataset '\(name)' has \(featureCount) features but architecture \(arch) expects \(arch.inputSize) inputs; make the first layer size \(featureCount)")
        }
        guard classCount <= arch.outputSize else {
            throw MLError(.schemaMismatch, "dataset '\(name)' has \(classCount) classes but architecture \(arch) has \(arch.outputSize) outputs; make the last layer size \(classCount)")
        }
    }
}

/// A train/test pair plus the preprocessing that produced the features.
public struct DatasetSplit: Sendable {
    /// Training rows (to be sharded across peers).
    public let train: Dataset
    /// Held-out rows for evaluation.
    public let test: Dataset
    /// Keys for safetensors `__metadata__`: `dataset`, `input_scale`, `input_mean`,
    /// `input_std`, `split` (and `label_column` for CSV).
    public let preprocessing: [String: String]

    /// Creates a split.
    public init(train: Dataset, test: Dataset, preprocessing: [String: String]) {
        self.train = train
        self.test = test
        self.preprocessing = preprocessing
    }
}

/// Where a dataset comes from; parse from the command line with `init(parsing:)`.
public enum DatasetSource: Sendable, Equatable, CustomStringConvertible {
    /// The bundled sklearn digits (8x8, 10 classes).
    case digits
    /// MNIST IDX files (`train-images-idx3-ubyte[.gz]` etc.) in a directory.
    case mnist(directory: String)
    /// Fashion-MNIST IDX files in a directory.
    case fashionMNIST(directory: String)
    /// A CSV file (optionally gzip); label column by name/index, else `target`/`label`/last.
    case csv(path: String, labelColumn: String?)

    /// Parses `digits`, `mnist:DIR`, `fashion-mnist:DIR`, `csv:FILE` or `csv:FILE#COLUMN`.
    ///
    /// - Throws: `MLError.invalidArgument` for anything else.
    public init(parsing text: String) throws {
        if text == "digits" { self = .digits; return }
        func rest(_ prefix: String) -> String? {
            guard text.hasPrefix(prefix) else { return nil }
            let r = String(text.dropFirst(prefix.count))
            return r.isEmpty ? nil : r
        }
        if let d = rest("mnist:") { self = .mnist(directory: d); return }
        if let d = rest("fashion-mnist:") { self = .fashionMNIST(directory: d); return }
        if let f = rest("csv:") {
            if let hash = f.lastIndex(of: "#") {
                let col = String(f[f.index(after: hash)...])
                self = .csv(path: String(f[..<hash]), labelColumn: col.isEmpty ? nil : col)
            } else {
                self = .csv(path: f, labelColumn: nil)
            }
            return
        }
        throw MLError(.invalidArgument, "unknown dataset '\(text)'; use digits, mnist:DIR, fashion-mnist:DIR or csv:FILE[#LABELCOLUMN]")
    }

    public var description: String {
        switch self {
        case .digits: return "digits"
        case .mnist(let d): return "mnist:\(d)"
        case .fashionMNIST(let d): return "fashion-mnist:\(d)"
        case .csv(let p, let c): return "csv:\(p)" + (c.map { "#\($0)" } ?? "")
        }
    }

    /// Loads and normalises the data, returning the train/test split.
    ///
    /// - Throws: `MLError` (`.io`, `.invalidDataset`) naming the file and what to do.
    public func load() throws -> DatasetSplit {
        switch self {
        case .digits:
            return try DatasetLoader.loadBundledDigits()
        case .mnist(let d):
            return try DatasetLoader.loadIDXDirectory(d, name: "mnist")
        case .fashionMNIST(let d):
            return try DatasetLoader.loadIDXDirectory(d, name: "fashion-mnist")
        case .csv(let p, let c):
            return try DatasetLoader.loadCSVSplit(path: p, labelColumn: c)
        }
    }
}

/// File-format readers. Public so tools and tests can load single files.
public enum DatasetLoader {
    /// Rows of the bundled digits used for training; the rest (297) are held out.
    public static let digitsTrainRows = 1500

    /// Reads a whole file.
    static func readFile(_ path: String) throws -> [UInt8] {
        guard let d = FileManager.default.contents(atPath: path) else {
            throw MLError(.io, "cannot read '\(path)': no such file or not readable; check the path and permissions")
        }
        return [UInt8](d)
    }

    /// Returns `bytes`, gunzipped first when they start with the gzip magic 1f 8b.
    ///
    /// - Throws: `MLError.invalidDataset` for corrupt or truncated gzip data, or output over `limit`.
    public static func maybeGunzip(_ bytes: [UInt8], file: String, limit: Int = 1 << 30) throws -> [UInt8] {
        guard bytes.count >= 2, bytes[0] == 0x1f, bytes[1] == 0x8b else { return bytes }
        var stream = z_stream()
        var rc = inflateInit2_(&stream, 15 + 32, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size))
        guard rc == Z_OK else {
            throw MLError(.io, "zlib inflateInit2 failed (\(rc)) for '\(file)'")
        }
        defer { inflateEnd(&stream) }
        var out = [UInt8](repeating: 0, count: max(bytes.count * 4, 1 << 16))
        var produced = 0
        var input = bytes
        try input.withUnsafeMutableBufferPointer { inp in
            stream.next_in = inp.baseAddress
            stream.avail_in = uInt(inp.count)
            while true {
                if produced == out.count {
                    guard out.count < limit else {
                        throw MLError(.invalidDataset, "'\(file)' decompresses to more than \(limit) bytes; it is not a dataset file of the expected size")
                    }
                    out.append(contentsOf: repeatElement(0, count: min(out.count, limit - out.count)))
                }
                let avail = out.count - produced
                rc = out.withUnsafeMutableBufferPointer { o in
                    stream.next_out = o.baseAddress! + produced
                    stream.avail_out = uInt(avail)
                    return inflate(&stream, Z_NO_FLUSH)
                }
                produced = out.count - Int(stream.avail_out)
                if rc == Z_STREAM_END { break }
                if rc == Z_OK { continue }
                if rc == Z_BUF_ERROR && stream.avail_out != 0 {
                    throw MLError(.invalidDataset, "'\(file)' is a truncated gzip stream (ended after \(produced) decompressed bytes); re-copy or re-download the file")
                }
                if rc == Z_BUF_ERROR { continue }
                let msg = stream.msg.map { String(cString: $0) } ?? "code \(rc)"
                throw MLError(.invalidDataset, "'\(file)' is not valid gzip data (\(msg)); re-copy the file or pass the uncompressed one")
            }
        }
        out.removeSubrange(produced...)
        return out
    }

    /// Gzip-compresses `bytes` (zlib deflate, windowBits 15+16); for tests and tools.
    public static func gzip(_ bytes: [UInt8], level: Int32 = 6) -> [UInt8] {
        var stream = z_stream()
        guard deflateInit2_(&stream, level, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY,
                            ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK else { return [] }
        defer { deflateEnd(&stream) }
        var out = [UInt8](repeating: 0, count: Int(deflateBound(&stream, uLong(bytes.count))) + 32)
        var input = bytes
        let produced: Int = input.withUnsafeMutableBufferPointer { inp in
            out.withUnsafeMutableBufferPointer { o in
                stream.next_in = inp.baseAddress
                stream.avail_in = uInt(inp.count)
                stream.next_out = o.baseAddress
                stream.avail_out = uInt(o.count)
                _ = deflate(&stream, Z_FINISH)
                return o.count - Int(stream.avail_out)
            }
        }
        out.removeSubrange(produced...)
        return out
    }

    /// Parses an IDX unsigned-byte file with `dims` dimensions; returns (shape, data start).
    ///
    /// - Throws: `MLError.invalidDataset` for a wrong magic, element type, dimension count,
    ///   truncated data or trailing bytes.
    public static func parseIDX(_ b: [UInt8], file: String, dims: Int) throws -> (shape: [Int], dataOffset: Int) {
        guard b.count >= 4 else {
            throw MLError(.invalidDataset, "'\(file)' is only \(b.count) bytes; an IDX file starts with a 4-byte magic. The file is truncated; re-copy it")
        }
        let magic = UInt32(b[0]) << 24 | UInt32(b[1]) << 16 | UInt32(b[2]) << 8 | UInt32(b[3])
        let expected = UInt32(0x800) | UInt32(dims)
        guard b[0] == 0, b[1] == 0, b[2] == 0x08, Int(b[3]) == dims else {
            throw MLError(.invalidDataset, String(format: "'%@' has magic 0x%08X, expected 0x%08X (unsigned bytes, %d dimension%@); is this the right file (images vs labels) and is it decompressed correctly?", file, magic, expected, dims, dims == 1 ? "" : "s"))
        }
        let header = 4 + 4 * dims
        guard b.count >= header else {
            throw MLError(.invalidDataset, "'\(file)' is truncated inside its header (\(b.count) of \(header) bytes); re-copy the file")
        }
        var shape: [Int] = []
        var total = 1
        for d in 0..<dims {
            let o = 4 + 4 * d
            let v = Int(b[o]) << 24 | Int(b[o + 1]) << 16 | Int(b[o + 2]) << 8 | Int(b[o + 3])
            shape.append(v)
            total = total.multipliedReportingOverflow(by: v).overflow ? Int.max : total * v
        }
        let have = b.count - header
        guard have >= total else {
            throw MLError(.invalidDataset, "'\(file)' is truncated: header promises \(shape.map(String.init).joined(separator: "x")) = \(total) bytes of data but only \(have) follow; re-copy the file")
        }
        guard have == total else {
            throw MLError(.invalidDataset, "'\(file)' has \(have - total) unexpected bytes after the \(total) data bytes its header declares; the file is corrupt or not an IDX file")
        }
        return (shape, header)
    }

    /// Loads one IDX image file and one label file, normalising pixels by `scale`.
    ///
    /// - Throws: `MLError` for I/O problems, malformed files and count mismatches.
    public static func loadIDX(images: String, labels: String, name: String, scale: Float = 1.0 / 255) throws -> Dataset {
        let ib = try maybeGunzip(try readFile(images), file: images)
        let lb = try maybeGunzip(try readFile(labels), file: labels)
        let (ishape, ioff) = try parseIDX(ib, file: images, dims: 3)
        let (lshape, loff) = try parseIDX(lb, file: labels, dims: 1)
        guard ishape[0] == lshape[0] else {
            throw MLError(.invalidDataset, "'\(images)' holds \(ishape[0]) images but '\(labels)' holds \(lshape[0]) labels; pair the matching files (train with train, t10k with t10k)")
        }
        let n = ishape[0]
        let f = ishape[1] * ishape[2]
        guard f > 0 else {
            throw MLError(.invalidDataset, "'\(images)' declares empty images (\(ishape[1])x\(ishape[2]))")
        }
        var feats = [Float](repeating: 0, count: n * f)
        feats.withUnsafeMutableBufferPointer { dst in
            ib.withUnsafeBufferPointer { src in
                for i in 0..<(n * f) { dst[i] = Float(src[ioff + i]) * scale }
            }
        }
        let labs = Array(lb[loff...])
        let maxLabel = Int(labs.max() ?? 0)
        return try Dataset(name: name, features: feats, labels: labs, featureCount: f, classCount: max(10, maxLabel + 1))
    }

    static func idxFile(_ dir: String, _ base: String) -> String {
        let gz = (dir as NSString).appendingPathComponent(base + ".gz")
        if FileManager.default.fileExists(atPath: gz) { return gz }
        let raw = (dir as NSString).appendingPathComponent(base)
        if FileManager.default.fileExists(atPath: raw) { return raw }
        return gz
    }

    /// Loads `train-*` and `t10k-*` IDX files (gzip or raw) from `dir`.
    public static func loadIDXDirectory(_ dir: String, name: String) throws -> DatasetSplit {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: dir, isDirectory: &isDir), isDir.boolValue else {
            throw MLError(.io, "'\(dir)' is not a directory; pass the folder holding train-images-idx3-ubyte.gz and friends, e.g. \(name):/data/\(name)")
        }
        let train = try loadIDX(images: idxFile(dir, "train-images-idx3-ubyte"),
                                labels: idxFile(dir, "train-labels-idx1-ubyte"), name: "\(name)-train")
        let test = try loadIDX(images: idxFile(dir, "t10k-images-idx3-ubyte"),
                               labels: idxFile(dir, "t10k-labels-idx1-ubyte"), name: "\(name)-test")
        guard train.featureCount == test.featureCount else {
            throw MLError(.invalidDataset, "train images have \(train.featureCount) pixels but test images \(test.featureCount) in '\(dir)'")
        }
        return DatasetSplit(train: train, test: test, preprocessing: [
            "dataset": name, "input_scale": "\(1.0 / 255.0)", "input_mean": "0", "input_std": "1",
            "split": "train=train-*-ubyte,test=t10k-*-ubyte",
        ])
    }

    /// A parsed CSV table: numeric cells row-major, optional header names.
    public struct CSVTable: Sendable {
        /// Column names when the file had a header with one name per column.
        public let header: [String]?
        /// Number of columns.
        public let columns: Int
        /// Cells, row-major.
        public let values: [Double]
        /// Number of data rows.
        public var rows: Int { columns == 0 ? 0 : values.count / columns }
    }

    /// Parses comma-separated numbers. The first line is a header when a field is not a
    /// number or its field count differs from the next line (sklearn's `n,features,names` line).
    ///
    /// - Throws: `MLError.invalidDataset` naming the line for ragged rows or non-numbers.
    public static func parseCSV(_ bytes: [UInt8], file: String) throws -> CSVTable {
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw MLError(.invalidDataset, "'\(file)' is not UTF-8 text; pass a CSV file (optionally gzip-compressed)")
        }
        var lines = text.split(whereSeparator: { $0 == "\n" || $0 == "\r\n" }).map { $0.trimmingCharacters(in: .whitespaces) }
        lines.removeAll { $0.isEmpty }
        guard !lines.isEmpty else {
            throw MLError(.invalidDataset, "'\(file)' has no rows; pass a CSV with one sample per line")
        }
        func fields(_ l: String) -> [String] {
            l.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
        }
        let first = fields(lines[0])
        var header: [String]? = nil
        var start = 0
        let firstNumeric = first.allSatisfy { Double($0) != nil }
        let secondCount = lines.count > 1 ? fields(lines[1]).count : first.count
        if !firstNumeric || first.count != secondCount {
            start = 1
            if first.count == secondCount { header = first }
        }
        guard start < lines.count else {
            throw MLError(.invalidDataset, "'\(file)' has a header but no data rows")
        }
        let cols = fields(lines[start]).count
        var values: [Double] = []
        values.reserveCapacity((lines.count - start) * cols)
        for li in start..<lines.count {
            let fs = fields(lines[li])
            guard fs.count == cols else {
                throw MLError(.invalidDataset, "'\(file)' line \(li + 1) has \(fs.count) fields, expected \(cols); fix the ragged row")
            }
            for (ci, f) in fs.enumerated() {
                guard let v = Double(f), v.isFinite else {
                    throw MLError(.invalidDataset, "'\(file)' line \(li + 1) column \(ci + 1): '\(f)' is not a finite number; only numeric CSVs are supported")
                }
                values.append(v)
            }
        }
        return CSVTable(header: header, columns: cols, values: values)
    }

    /// Splits a table into raw features and labels using `labelColumn` (name or 0-based index;
    /// default: a column named target/label, else the last).
    static func featuresAndLabels(_ t: CSVTable, labelColumn: String?, file: String) throws -> (features: [Float], labels: [UInt8], featureCount: Int, labelIndex: Int) {
        guard t.columns >= 2 else {
            throw MLError(.invalidDataset, "'\(file)' has \(t.columns) column(s); need at least one feature and a label column")
        }
        var li = t.columns - 1
        if let c = labelColumn {
            if let h = t.header, let idx = h.firstIndex(of: c) { li = idx }
            else if let idx = Int(c), idx >= 0, idx < t.columns { li = idx }
            else {
                throw MLError(.invalidDataset, "'\(file)' has no label column '\(c)'; give a header name or a 0-based index below \(t.columns)")
            }
        } else if let h = t.header, let idx = h.firstIndex(where: { ["target", "label"].contains($0.lowercased()) }) {
            li = idx
        }
        let f = t.columns - 1
        var feats = [Float]()
        feats.reserveCapacity(t.rows * f)
        var labs = [UInt8]()
        labs.reserveCapacity(t.rows)
        for r in 0..<t.rows {
            for c in 0..<t.columns {
                let v = t.values[r * t.columns + c]
                if c == li {
                    guard v >= 0, v <= 255, v == v.rounded() else {
                        throw MLError(.invalidDataset, "'\(file)' data row \(r + 1): label \(v) is not an integer class in 0...255; pick the right label column")
                    }
                    labs.append(UInt8(v))
                } else {
                    feats.append(Float(v))
                }
            }
        }
        return (feats, labs, f, li)
    }

    /// Loads a CSV and splits it: the last round(16.5%) rows are held out; features are
    /// standardised with the training rows' per-feature mean and std.
    public static func loadCSVSplit(path: String, labelColumn: String?) throws -> DatasetSplit {
        let t = try parseCSV(try maybeGunzip(try readFile(path), file: path), file: path)
        let (raw, labs, f, li) = try featuresAndLabels(t, labelColumn: labelColumn, file: path)
        let n = labs.count
        guard n >= 2 else {
            throw MLError(.invalidDataset, "'\(path)' has \(n) row(s); need at least 2 to hold some out for testing")
        }
        let testCount = min(n - 1, max(1, Int((Double(n) * 0.165).rounded())))
        let trainCount = n - testCount
        var mean = [Double](repeating: 0, count: f), std = [Double](repeating: 0, count: f)
        for r in 0..<trainCount { for j in 0..<f { mean[j] += Double(raw[r * f + j]) } }
        for j in 0..<f { mean[j] /= Double(trainCount) }
        for r in 0..<trainCount { for j in 0..<f { let d = Double(raw[r * f + j]) - mean[j]; std[j] += d * d } }
        for j in 0..<f {
            std[j] = (std[j] / Double(trainCount)).squareRoot()
            if !(std[j] > 1e-12) { std[j] = 1 }
        }
        var feats = raw
        for r in 0..<n { for j in 0..<f { feats[r * f + j] = Float((Double(raw[r * f + j]) - mean[j]) / std[j]) } }
        let classes = max(2, Int(labs.max() ?? 0) + 1)
        let base = ((path as NSString).lastPathComponent as NSString).deletingPathExtension
        let train = try Dataset(name: "\(base)-train", features: Array(feats[0..<(trainCount * f)]), labels: Array(labs[0..<trainCount]), featureCount: f, classCount: classes)
        let test = try Dataset(name: "\(base)-test", features: Array(feats[(trainCount * f)...]), labels: Array(labs[trainCount...]), featureCount: f, classCount: classes)
        return DatasetSplit(train: train, test: test, preprocessing: [
            "dataset": "csv:\(path)", "label_column": "\(li)", "input_scale": "1",
            "input_mean": mean.map { "\($0)" }.joined(separator: ","),
            "input_std": std.map { "\($0)" }.joined(separator: ","),
            "split": "train=0..<\(trainCount),test=\(trainCount)..<\(n)",
        ])
    }

    /// Loads the bundled digits: rows 0..<1500 train, 1500..<1797 test, x / 16.
    public static func loadBundledDigits() throws -> DatasetSplit {
        guard let url = Bundle.module.url(forResource: "digits.csv", withExtension: "gz") else {
            throw MLError(.io, "the bundled digits.csv.gz resource is missing from the GossipML bundle; rebuild the package or pass csv:PATH/TO/digits.csv.gz")
        }
        return try loadDigits(path: url.path)
    }

    /// Loads a digits-format CSV(.gz) (64 features 0..16, label last, no header) with the
    /// bundled split and /16 scaling.
    public static func loadDigits(path: String) throws -> DatasetSplit {
        let t = try parseCSV(try maybeGunzip(try readFile(path), file: path), file: path)
        guard t.columns == 65, t.rows > digitsTrainRows else {
            throw MLError(.invalidDataset, "'\(path)' has \(t.rows) rows of \(t.columns) columns; the digits format is 1797 rows of 64 features + label")
        }
        let (raw, labs, f, _) = try featuresAndLabels(t, labelColumn: nil, file: path)
        let feats = raw.map { $0 / 16 }
        let k = digitsTrainRows
        let train = try Dataset(name: "digits-train", features: Array(feats[0..<(k * f)]), labels: Array(labs[0..<k]), featureCount: f, classCount: 10)
        let test = try Dataset(name: "digits-test", features: Array(feats[(k * f)...]), labels: Array(labs[k...]), featureCount: f, classCount: 10)
        return DatasetSplit(train: train, test: test, preprocessing: [
            "dataset": "digits", "input_scale": "0.0625", "input_mean": "0", "input_std": "1",
            "split": "train=0..<\(k),test=\(k)..<\(labs.count)",
        ])
    }
}
