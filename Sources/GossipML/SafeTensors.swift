// safetensors import/export (huggingface format), float32 only, strictly validated.
//
// Layout: u64 little-endian header length N, N bytes of UTF-8 JSON, then the raw data.
// The JSON is written exactly like the reference `serialize` (safetensors crate): compact,
// `__metadata__` first (omitted when empty), then tensors ordered by (dtype alignment
// descending, name) — for our all-F32 sets that is byte-wise name order — each as
// `"name":{"dtype":"F32","shape":[..],"data_offsets":[begin,end]}`, data laid out in the
// same order, header padded with spaces to a multiple of 8. Metadata keys are sorted
// (the reference uses a HashMap, so any order is valid; sorting makes our bytes stable).
//
// Metadata keys written by gossip (all strings):
//   arch          layer sizes, e.g. "784,256,128,10"
//   activation    "relu" (hidden layers; the output is logits for softmax)
//   format        "gossip-mlp-v1"
//   dataset       "digits" | "mnist" | "fashion-mnist" | "csv:PATH"
//   input_scale, input_mean, input_std
//                 preprocessing x' = (x * input_scale - input_mean) / input_std; mean and
//                 std are one number or comma-separated per-feature values
//   split         which rows/files are train and test
//   plus optional: label_column, test_accuracy, steps, seed, schema_hash (hex).

import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Reader and writer for the safetensors format (float32 tensors).
public enum SafeTensors {
    /// Largest header accepted (same as the reference: 100,000,000 bytes).
    public static let maxHeaderSize = 100_000_000

    static let knownDtypes: Set<String> = ["BOOL", "U8", "I8", "F8_E5M2", "F8_E4M3", "F8_E8M0", "F4", "F6_E2M3", "F6_E3M2",
                                           "I16", "U16", "F16", "BF16", "I32", "U32", "F32", "C64", "F64", "I64", "U64"]

    /// Serialises `p` with `metadata` into safetensors bytes.
    ///
    /// - Throws: `MLError.invalidSafeTensors` for duplicate tensor names or a name `__metadata__`.
    public static func encode(_ p: ParameterSet, metadata: [String: String]) throws -> [UInt8] {
        let order = p.specs.sorted { $0.name.utf8.lexicographicallyPrecedes($1.name.utf8) }
        for i in order.indices.dropFirst() where order[i].name == order[i - 1].name {
            throw MLError(.invalidSafeTensors, "tensor name '\(order[i].name)' appears twice; names must be unique")
        }
        if order.contains(where: { $0.name == "__metadata__" }) {
            throw MLError(.invalidSafeTensors, "a tensor may not be called __metadata__; rename it")
        }
        var entries: [String] = []
        if !metadata.isEmpty {
            let keys = metadata.keys.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }
            let body = keys.map { jsonString($0) + ":" + jsonString(metadata[$0] ?? "") }.joined(separator: ",")
            entries.append("\"__metadata__\":{" + body + "}")
        }
        var offset = 0
        for s in order {
            let bytes = s.count * 4
            entries.append(jsonString(s.name) + ":{\"dtype\":\"F32\",\"shape\":["
                + s.shape.map(String.init).joined(separator: ",") + "],\"data_offsets\":[\(offset),\(offset + bytes)]}")
            offset += bytes
        }
        var header = Array(("{" + entries.joined(separator: ",") + "}").utf8)
        header.append(contentsOf: repeatElement(UInt8(ascii: " "), count: (8 - header.count % 8) % 8))
        var out = [UInt8]()
        out.reserveCapacity(8 + header.count + offset)
        var n = UInt64(header.count).littleEndian
        withUnsafeBytes(of: &n) { out.append(contentsOf: $0) }
        out.append(contentsOf: header)
        p.storage.withUnsafeBufferPointer { st in
            for s in order {
                let slice = UnsafeBufferPointer(rebasing: st[s.range])
                #if _endian(little)
                out.append(contentsOf: UnsafeRawBufferPointer(slice))
                #else
                for v in slice { withUnsafeBytes(of: v.bitPattern.littleEndian) { out.append(contentsOf: $0) } }
                #endif
            }
        }
        return out
    }

    /// JSON string literal as serde_json writes it (escapes `"`, `\`, control characters).
    static func jsonString(_ s: String) -> String {
        var r = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": r += "\\\""
            case "\\": r += "\\\\"
            case "\n": r += "\\n"
            case "\r": r += "\\r"
            case "\t": r += "\\t"
            case "\u{08}": r += "\\b"
            case "\u{0C}": r += "\\f"
            default:
                if u.value < 0x20 {
                    r += String(format: "\\u%04x", u.value)
                } else {
                    r.unicodeScalars.append(u)
                }
            }
        }
        return r + "\""
    }

    static func bad(_ m: String) -> MLError { MLError(.invalidSafeTensors, m) }

    /// Parses safetensors bytes, rejecting everything the reference rejects.
    ///
    /// Tensors come back in gossip's MLP order (`layers.0.weight`, `layers.0.bias`, ...) when
    /// every name has that form, otherwise in data-offset order.
    /// - Throws: `MLError.invalidSafeTensors` saying what is wrong.
    public static func decode(_ bytes: [UInt8]) throws -> (parameters: ParameterSet, metadata: [String: String]) {
        guard bytes.count >= 8 else {
            throw bad("file is \(bytes.count) bytes, shorter than the 8-byte header length; it is truncated or not safetensors")
        }
        var n: UInt64 = 0
        for i in 0..<8 { n |= UInt64(bytes[i]) << (8 * UInt64(i)) }
        guard n <= UInt64(maxHeaderSize) else {
            throw bad("header length \(n) exceeds the limit of \(maxHeaderSize) bytes; the file is corrupt or not safetensors")
        }
        let hlen = Int(n)
        guard 8 + hlen <= bytes.count else {
            throw bad("header length \(hlen) runs past the end of the \(bytes.count)-byte file; the file is truncated")
        }
        let headerBytes = bytes[8..<(8 + hlen)]
        guard let headerText = String(validating: headerBytes, as: UTF8.self) else {
            throw bad("header is not valid UTF-8; the file is corrupt")
        }
        guard headerText.first == "{" else {
            throw bad("header does not start with '{'; the file is corrupt or not safetensors")
        }
        let json: Any
        do {
            json = try JSONSerialization.jsonObject(with: Data(headerBytes), options: [])
        } catch {
            throw bad("header is not valid JSON (\(error.localizedDescription)); the file is corrupt")
        }
        guard let obj = json as? [String: Any] else {
            throw bad("header JSON is not an object; the file is corrupt")
        }
        var metadata: [String: String] = [:]
        struct Entry { let name: String; let shape: [Int]; let begin: Int; let end: Int }
        var entries: [Entry] = []
        func ints(_ v: Any?, _ what: String, _ name: String) throws -> [Int] {
            guard let arr = v as? [Any] else { throw bad("tensor '\(name)': \(what) is missing or not an array") }
            return try arr.map { e in
                guard let num = e as? NSNumber, let i = Int(exactly: num.doubleValue), i >= 0,
                      num.doubleValue == Double(num.int64Value) else {
                    throw bad("tensor '\(name)': \(what) holds '\(e)', not a non-negative integer")
                }
                return i
            }
        }
        for (key, value) in obj {
            if key == "__metadata__" {
                guard let m = value as? [String: Any] else { throw bad("__metadata__ is not an object of strings") }
                for (k, v) in m {
                    guard let s = v as? String else { throw bad("__metadata__ value for '\(k)' is not a string") }
                    metadata[k] = s
                }
                continue
            }
            guard let info = value as? [String: Any] else { throw bad("tensor '\(key)': entry is not an object") }
            guard let dtype = info["dtype"] as? String else { throw bad("tensor '\(key)': dtype missing or not a string") }
            guard dtype == "F32" else {
                if knownDtypes.contains(dtype) {
                    throw bad("tensor '\(key)' has dtype \(dtype); gossip models are float32 only; convert the file to F32")
                }
                throw bad("tensor '\(key)' has unknown dtype '\(dtype)'")
            }
            let shape = try ints(info["shape"], "shape", key)
            let off = try ints(info["data_offsets"], "data_offsets", key)
            guard off.count == 2 else { throw bad("tensor '\(key)': data_offsets must be [begin, end]") }
            entries.append(Entry(name: key, shape: shape, begin: off[0], end: off[1]))
        }
        entries.sort { ($0.begin, $0.end, $0.name) < ($1.begin, $1.end, $1.name) }
        let dataStart = 8 + hlen
        let dataLen = bytes.count - dataStart
        var expected = 0
        for e in entries {
            guard e.begin == expected else {
                throw bad("tensor '\(e.name)' starts at byte \(e.begin) but the previous data ends at \(expected); offsets overlap or leave a gap")
            }
            guard e.end >= e.begin else { throw bad("tensor '\(e.name)': data_offsets end \(e.end) is before begin \(e.begin)") }
            guard e.end <= dataLen else {
                throw bad("tensor '\(e.name)': data_offsets end \(e.end) is past the \(dataLen) data bytes of the file; the file is truncated or corrupt")
            }
            // Every product below is checked: a hostile shape must be refused, never trap. The
            // byte count must equal the span, which is bounded by the file size, so whatever
            // passes allocates at most what the file holds.
            var elems = 1
            for d in e.shape {
                let (m, o) = elems.multipliedReportingOverflow(by: d)
                guard !o else {
                    throw bad("tensor '\(e.name)': shape \(e.shape) has more elements than fit in a 64-bit count; the file is corrupt")
                }
                elems = m
            }
            let (byteCount, o) = elems.multipliedReportingOverflow(by: 4)
            guard !o, byteCount == e.end - e.begin else {
                let need = o ? "more than \(Int.max) bytes" : "\(byteCount) bytes"
                throw bad("tensor '\(e.name)': shape \(e.shape) of F32 (\(elems) elements) needs \(need) but data_offsets span \(e.end - e.begin); the file is corrupt")
            }
            expected = e.end
        }
        guard expected == dataLen else {
            if expected < dataLen {
                throw bad("\(dataLen - expected) trailing bytes after the last tensor; the file is corrupt")
            }
            throw bad("tensors need \(expected) data bytes but the file has \(dataLen); the file is truncated")
        }
        let ordered = canonicalOrder(entries.map { $0.name }) ?? entries.map { $0.name }
        let byName = Dictionary(uniqueKeysWithValues: entries.map { ($0.name, $0) })
        var p = ParameterSet(specs: ordered.compactMap { n in byName[n].map { (n, $0.shape) } })
        bytes.withUnsafeBytes { raw in
            p.storage.withUnsafeMutableBufferPointer { dst in
                guard let d = dst.baseAddress else { return }
                for s in p.specs {
                    guard let e = byName[s.name], s.count > 0 else { continue }
                    let src = UnsafeRawBufferPointer(rebasing: raw[(dataStart + e.begin)..<(dataStart + e.end)])
                    for i in 0..<s.count {
                        d[s.offset + i] = Float(bitPattern: UInt32(littleEndian: src.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self)))
                    }
                }
            }
        }
        return (p, metadata)
    }

    /// MLP order for names of the form layers.{i}.weight / layers.{i}.bias, else nil.
    static func canonicalOrder(_ names: [String]) -> [String]? {
        var keyed: [(Int, Int, String)] = []
        for n in names {
            let parts = n.split(separator: ".", omittingEmptySubsequences: false)
            guard parts.count == 3, parts[0] == "layers", let i = Int(parts[1]), i >= 0, String(i) == parts[1] else { return nil }
            switch parts[2] {
            case "weight": keyed.append((i, 0, n))
            case "bias": keyed.append((i, 1, n))
            default: return nil
            }
        }
        return keyed.sorted { ($0.0, $0.1) < ($1.0, $1.1) }.map { $0.2 }
    }

    /// Writes atomically: temp file in the same directory, fsync, rename, fsync directory.
    ///
    /// - Throws: `MLError.io` naming the path and the system error.
    public static func write(_ p: ParameterSet, metadata: [String: String], to path: String) throws {
        let bytes = try encode(p, metadata: metadata)
        let dir = (path as NSString).deletingLastPathComponent.isEmpty ? "." : (path as NSString).deletingLastPathComponent
        let tmp = path + ".tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        func fail(_ what: String) -> MLError {
            MLError(.io, "\(what) '\(path)' failed: \(String(cString: strerror(errno))); check that the directory exists and is writable")
        }
        let fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw fail("creating a temporary file for") }
        var ok = false
        defer { if !ok { unlink(tmp) } }
        var written = 0
        let writeOK: Bool = bytes.withUnsafeBytes { raw in
            while written < raw.count {
                let r = Glibc.write(fd, raw.baseAddress! + written, raw.count - written)
                if r < 0 { if errno == EINTR { continue }; return false }
                written += r
            }
            return true
        }
        guard writeOK, fsync(fd) == 0 else { let e = fail("writing"); close(fd); throw e }
        guard close(fd) == 0 else { throw fail("closing") }
        guard rename(tmp, path) == 0 else { throw fail("renaming the temporary file onto") }
        ok = true
        let dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dfd >= 0 { _ = fsync(dfd); close(dfd) }
    }

    /// Reads and decodes a safetensors file.
    public static func read(path: String) throws -> (parameters: ParameterSet, metadata: [String: String]) {
        try decode(try DatasetLoader.readFile(path))
    }
}
