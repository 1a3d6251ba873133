// A strict reader of the Prometheus text exposition format (version 0.0.4), for the metrics
// tests: every line must be a HELP, a TYPE or a sample with valid syntax; every sample must
// belong to a family declared by a TYPE line before it; histograms must have increasing
// buckets ending in +Inf equal to _count. It throws on the first violation, saying which line.
import Foundation

struct PrometheusText {
    struct Sample: Equatable {
        var name: String
        var labels: [String: String]
        var value: Double
    }

    struct Violation: Error, CustomStringConvertible {
        let description: String
    }

    /// Family name -> type ("counter", "gauge", "histogram", "summary", "untyped").
    var types: [String: String] = [:]
    var help: [String: String] = [:]
    var samples: [Sample] = []

    /// The value of the sample `name` with exactly `labels`, if present.
    func value(_ name: String, _ labels: [String: String] = [:]) -> Double? {
        samples.first { $0.name == name && $0.labels == labels }?.value
    }

    /// Sum over every label set of `name`.
    func total(_ name: String) -> Double {
        samples.filter { $0.name == name }.reduce(0) { $0 + $1.value }
    }

    static func isMetricName(_ s: Substring) -> Bool {
        guard let f = s.unicodeScalars.first, f == "_" || f == ":" || (f.isASCII && CharacterSet.letters.contains(f)) else { return false }
        return s.unicodeScalars.allSatisfy { $0 == "_" || $0 == ":" || ($0.isASCII && CharacterSet.alphanumerics.contains($0)) }
    }

    static func isLabelName(_ s: Substring) -> Bool {
        guard let f = s.unicodeScalars.first, f == "_" || (f.isASCII && CharacterSet.letters.contains(f)) else { return false }
        return s.unicodeScalars.allSatisfy { $0 == "_" || ($0.isASCII && CharacterSet.alphanumerics.contains($0)) }
    }

    static func parseValue(_ s: Substring) -> Double? {
        switch s {
        case "NaN": return .nan
        case "+Inf": return .infinity
        case "-Inf": return -.infinity
        default:
            guard s.allSatisfy({ "0123456789.eE+-".contains($0) }) else { return nil }
            return Double(s)
        }
    }

    /// The family a sample name belongs to (histogram/summary suffixes stripped when declared so).
    func family(of name: String) -> String? {
        if types[name] != nil { return name }
        for suffix in ["_bucket", "_sum", "_count"] where name.hasSuffix(suffix) {
            let base = String(name.dropLast(suffix.count))
            if let t = types[base], t == "histogram" || (t == "summary" && suffix != "_bucket") { return base }
        }
        return nil
    }

    init(_ text: String) throws {
        guard text.hasSuffix("\n") else { throw Violation(description: "the exposition does not end with a newline") }
        var seenFamilies: [String] = []
        for (i, line) in text.dropLast().split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let where_ = "line \(i + 1) '\(line.prefix(120))'"
            if line.isEmpty { throw Violation(description: "\(where_): empty line") }
            if line.hasPrefix("#") {
                let parts = line.split(separator: " ", maxSplits: 3, omittingEmptySubsequences: false)
                guard parts.count >= 3, parts[0] == "#" else { throw Violation(description: "\(where_): a comment that is neither HELP nor TYPE") }
                let name = String(parts[2])
                guard PrometheusText.isMetricName(parts[2]) else { throw Violation(description: "\(where_): invalid metric name") }
                switch parts[1] {
                case "HELP":
                    guard help[name] == nil else { throw Violation(description: "\(where_): second HELP for \(name)") }
                    help[name] = parts.count > 3 ? String(parts[3]) : ""
                case "TYPE":
                    guard parts.count == 4, ["counter", "gauge", "histogram", "summary", "untyped"].contains(parts[3]) else {
                        throw Violation(description: "\(where_): TYPE without a known type")
                    }
                    guard types[name] == nil else { throw Violation(description: "\(where_): second TYPE for \(name)") }
                    guard !samples.contains(where: { $0.name == name }) else { throw Violation(description: "\(where_): TYPE after its samples") }
                    types[name] = String(parts[3])
                    seenFamilies.append(name)
                default:
                    throw Violation(description: "\(where_): a comment that is neither HELP nor TYPE")
                }
                continue
            }
            // name [{labels}] value [timestamp]
            var rest = line[...]
            let nameEnd = rest.firstIndex { $0 == "{" || $0 == " " } ?? rest.endIndex
            let name = rest[..<nameEnd]
            guard PrometheusText.isMetricName(name) else { throw Violation(description: "\(where_): invalid metric name") }
            rest = rest[nameEnd...]
            var labels: [String: String] = [:]
            if rest.first == "{" {
                rest = rest.dropFirst()
                while rest.first != "}" {
                    guard let eq = rest.firstIndex(of: "=") else { throw Violation(description: "\(where_): label without '='") }
                    let ln = rest[..<eq]
                    guard PrometheusText.isLabelName(ln) else { throw Violation(description: "\(where_): invalid label name '\(ln)'") }
                    rest = rest[rest.index(after: eq)...]
                    guard rest.first == "\"" else { throw Violation(description: "\(where_): label value not quoted") }
                    rest = rest.dropFirst()
                    var value = ""
                    var closed = false
                    while let c = rest.first {
                        rest = rest.dropFirst()
                        if c == "\\" {
                            guard let e = rest.first, "\\\"n".contains(e) else { throw Violation(description: "\(where_): bad escape in label value") }
                            value.append(e == "n" ? "\n" : e)
                            rest = rest.dropFirst()
                        } else if c == "\"" {
                            closed = true
                            break
                        } else {
                            value.append(c)
                        }
                    }
                    guard closed else { throw Violation(description: "\(where_): unterminated label value") }
                    guard labels[String(ln)] == nil else { throw Violation(description: "\(where_): label \(ln) twice") }
                    labels[String(ln)] = value
                    if rest.first == "," { rest = rest.dropFirst() } else if rest.first != "}" {
                        throw Violation(description: "\(where_): expected ',' or '}' after a label")
                    }
                }
                rest = rest.dropFirst()
            }
            guard rest.first == " " else { throw Violation(description: "\(where_): no space before the value") }
            let fields = rest.dropFirst().split(separator: " ", omittingEmptySubsequences: false)
            guard (1...2).contains(fields.count), let v = PrometheusText.parseValue(fields[0]) else {
                throw Violation(description: "\(where_): the value is not a float")
            }
            if fields.count == 2, Int64(fields[1]) == nil { throw Violation(description: "\(where_): the timestamp is not an integer") }
            guard let fam = family(of: String(name)) else { throw Violation(description: "\(where_): sample without a TYPE line before it") }
            guard seenFamilies.last == fam else { throw Violation(description: "\(where_): sample of \(fam) not grouped after its TYPE line") }
            if types[fam] == "counter", !(v >= 0) { throw Violation(description: "\(where_): a counter below 0") }
            guard !samples.contains(where: { $0.name == String(name) && $0.labels == labels }) else {
                throw Violation(description: "\(where_): the same series twice")
            }
            samples.append(Sample(name: String(name), labels: labels, value: v))
        }
        // Histograms: buckets increase with `le`, and +Inf equals _count.
        for (fam, t) in types where t == "histogram" {
            var series: [[String: String]: [(Double, Double)]] = [:]
            for s in samples where s.name == fam + "_bucket" {
                guard let le = s.labels["le"], let bound = PrometheusText.parseValue(le[...]) else {
                    throw Violation(description: "\(fam)_bucket without a numeric le label")
                }
                var rest = s.labels
                rest["le"] = nil
                series[rest, default: []].append((bound, s.value))
            }
            for (labels, buckets) in series {
                let sorted = buckets.sorted { $0.0 < $1.0 }
                guard sorted.last?.0 == .infinity else { throw Violation(description: "\(fam)\(labels): no +Inf bucket") }
                for k in 1..<sorted.count where sorted[k].1 < sorted[k - 1].1 {
                    throw Violation(description: "\(fam)\(labels): bucket le=\(sorted[k].0) below the one before")
                }
                guard let count = samples.first(where: { $0.name == fam + "_count" && $0.labels == labels })?.value,
                      count == sorted.last!.1 else { throw Violation(description: "\(fam)\(labels): _count differs from the +Inf bucket") }
                guard samples.contains(where: { $0.name == fam + "_sum" && $0.labels == labels }) else {
                    throw Violation(description: "\(fam)\(labels): no _sum")
                }
            }
        }
    }
}
