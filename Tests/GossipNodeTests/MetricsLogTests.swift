// The JSON-lines metrics log: each event's line parses back with JSONSerialization with the
// documented keys; concurrent writers produce whole lines only; unusable paths are refused
// with the path named; the reader skips a truncated last line and names file:line of a bad one.
import Foundation
@testable import GossipNode
import Testing

private func tempDir(_ name: String) throws -> String {
    let d = NSTemporaryDirectory() + "gossip-metricslog-\(name)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
    try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
    return d
}

private func object(_ line: String) throws -> [String: Any] {
    #expect(line.hasSuffix("\n") && line.filter { $0 == "\n" }.count == 1, "one line: \(line)")
    let any = try JSONSerialization.jsonObject(with: Data(line.utf8))
    return try #require(any as? [String: Any], "not an object: \(line)")
}

@Suite struct MetricsLogTests {
    let date = Date(timeIntervalSince1970: 1_796_291_315.123)   // 2026-12-03T09:48:35.123Z

    @Test func roundLine() throws {
        let o = try object(MetricsLog.line(for: .round(round: 7, loss: 0.25, steps: 70, samples: 8960), node: "127.0.0.1:4000", at: date))
        #expect(o["ts"] as? String == "2026-12-03T09:48:35.123Z")
        #expect(o["node"] as? String == "127.0.0.1:4000")
        #expect(o["event"] as? String == "round")
        #expect((o["round"] as? NSNumber)?.intValue == 7)
        #expect((o["loss"] as? NSNumber)?.doubleValue == 0.25)
        #expect((o["steps"] as? NSNumber)?.intValue == 70)
        #expect((o["samples"] as? NSNumber)?.intValue == 8960)
        #expect(Set(o.keys) == ["ts", "node", "event", "round", "loss", "steps", "samples"])
    }

    @Test func evalExchangeMembershipLines() throws {
        let e = try object(MetricsLog.line(for: .eval(round: 10, accuracy: 0.9375, loss: 0.21), node: "n", at: date))
        #expect(Set(e.keys) == ["ts", "node", "event", "round", "accuracy", "loss"])
        #expect(e["event"] as? String == "eval" && (e["accuracy"] as? NSNumber)?.doubleValue == 0.9375)

        let ok = try object(MetricsLog.line(for: .exchange(round: 3, peer: "127.0.0.1:5", outcome: "ok", status: nil, distance: 0.0123, seconds: 0.004), node: "n", at: date))
        #expect(Set(ok.keys) == ["ts", "node", "event", "round", "peer", "outcome", "status", "distance", "seconds"])
        #expect(ok["status"] is NSNull && (ok["distance"] as? NSNumber)?.doubleValue == 0.0123)
        #expect(ok["outcome"] as? String == "ok" && ok["peer"] as? String == "127.0.0.1:5")

        let failed = try object(MetricsLog.line(for: .exchange(round: 3, peer: "p", outcome: "failed", status: "UNAVAILABLE", distance: nil, seconds: 3), node: "n", at: date))
        #expect(failed["status"] as? String == "UNAVAILABLE" && failed["distance"] is NSNull)

        let m = try object(MetricsLog.line(for: .membership(round: 1, known: 3, added: ["a:1", "b:2"], removed: []), node: "n", at: date))
        #expect(Set(m.keys) == ["ts", "node", "event", "round", "known", "added", "removed"])
        #expect(m["added"] as? [String] == ["a:1", "b:2"] && (m["removed"] as? [String])?.isEmpty == true)
    }

    /// JSON has no NaN or infinity: such values are written as null, and read back as NaN/nil.
    @Test func nonFiniteNumbersAreNull() throws {
        let line = MetricsLog.line(for: .round(round: 1, loss: .nan, steps: 1, samples: 1), node: "n", at: date)
        #expect(try object(line)["loss"] is NSNull)
        let inf = MetricsLog.line(for: .exchange(round: 1, peer: "p", outcome: "ok", status: nil, distance: .infinity, seconds: 1), node: "n", at: date)
        #expect(try object(inf)["distance"] is NSNull)
        let back = try #require(try MetricsLogReader.parse(line: line.dropLast()))
        guard case .round(_, let loss, _, _) = back.event else { Issue.record("not a round: \(back.event)"); return }
        #expect(loss.isNaN)
    }

    /// Quotes, backslashes and control characters in strings stay one valid line.
    @Test func stringsAreEscaped() throws {
        let nasty = "a\"b\\c\nd\te\u{1}f\u{2028}"
        let line = MetricsLog.line(for: .exchange(round: 1, peer: nasty, outcome: "ok", status: nil, distance: 0, seconds: 0), node: nasty, at: date)
        let o = try object(line)
        #expect(o["peer"] as? String == nasty && o["node"] as? String == nasty)
    }

    @Test func timestampsRoundTrip() {
        #expect(MetricsLog.rfc3339(Date(timeIntervalSince1970: 0)) == "1970-01-01T00:00:00.000Z")
        #expect(MetricsLog.rfc3339(Date(timeIntervalSince1970: 1.9996)) == "1970-01-01T00:00:02.000Z")
        let t = MetricsLog.parseRFC3339("2026-12-03T09:48:35.123Z")!
        #expect(abs(t - 1_796_291_315.123) < 1e-6)
        #expect(MetricsLog.parseRFC3339("2026-12-03T10:48:35.123+01:00") == t)
        #expect(MetricsLog.parseRFC3339("2026-12-03T09:48:35Z") == 1_796_291_315)
        for bad in ["", "2026-12-03", "2026-12-03T09:48:35", "2026-13-03T09:48:35Z", "2026-12-03T09:48:35.Z", "2026-12-03T09:48:35Zjunk", "x026-12-03T09:48:35Z"] {
            #expect(MetricsLog.parseRFC3339(bad) == nil, "\(bad)")
        }
    }

    /// Eight threads appending at once to one file (two logs on it, as two processes would):
    /// every line whole, none lost.
    @Test func concurrentWritersWriteWholeLines() throws {
        let dir = try tempDir("concurrent")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/m.jsonl"
        let a = try MetricsLog(path: path, node: "127.0.0.1:1"), b = try MetricsLog(path: path, node: "127.0.0.1:2")
        DispatchQueue.concurrentPerform(iterations: 8) { i in
            let log = i % 2 == 0 ? a : b
            for r in 0..<250 {
                log.record(.membership(round: r, known: 40, added: (0..<40).map { "10.0.\(i).\($0):4000" }, removed: []))
            }
        }
        #expect(a.linesWritten == 1000 && b.linesWritten == 1000)
        let text = try String(contentsOfFile: path, encoding: .utf8)
        let lines = text.split(separator: "\n")
        #expect(lines.count == 2000 && text.hasSuffix("\n"))
        for l in lines { _ = try object(String(l) + "\n") }
        let f = try MetricsLogReader.read(path: path)
        #expect(f.records.count == 2000 && !f.truncatedLastLine)
    }

    /// Reopening appends; it never truncates.
    @Test func reopeningAppends() throws {
        let dir = try tempDir("append")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/m.jsonl"
        try MetricsLog(path: path, node: "n").record(.eval(round: 1, accuracy: 0.5, loss: 1))
        try MetricsLog(path: path, node: "n").record(.eval(round: 2, accuracy: 0.6, loss: 0.9))
        #expect(try MetricsLogReader.read(path: path).records.count == 2)
    }

    @Test func unusablePathsAreRefusedByName() throws {
        let dir = try tempDir("refuse")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        for path in [dir + "/missing/dir/m.jsonl", dir] {
            do {
                _ = try MetricsLog(path: path)
                Issue.record("opened \(path)")
            } catch {
                #expect(error.message.contains(path) && error.message.contains("--metrics-file"), "\(error.message)")
            }
        }
    }

    @Test func readerSkipsTruncatedLastLineAndUnknownEvents() throws {
        let dir = try tempDir("reader")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/m.jsonl"
        let full = MetricsLog.line(for: .eval(round: 1, accuracy: 0.5, loss: 1), node: "n", at: date)
        let future = #"{"ts":"2026-12-03T09:48:35.123Z","node":"n","event":"checkpoint","round":4}"# + "\n"
        try (full + "\n" + future + full + String(full.prefix(30))).write(toFile: path, atomically: true, encoding: .utf8)
        let f = try MetricsLogReader.read(path: path)
        #expect(f.records.count == 2 && f.truncatedLastLine && f.unknownEvents == 1)
        // A complete last line without its newline is kept.
        try (full + full.dropLast()).write(toFile: path, atomically: true, encoding: .utf8)
        let g = try MetricsLogReader.read(path: path)
        #expect(g.records.count == 2 && !g.truncatedLastLine)
    }

    @Test func readerNamesFileAndLineOfAMalformedLine() throws {
        let dir = try tempDir("bad")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/m.jsonl"
        let full = MetricsLog.line(for: .round(round: 1, loss: 1, steps: 1, samples: 1), node: "n", at: date)
        let cases = [
            "not json\n",
            #"{"ts":"yesterday","node":"n","event":"eval","round":1,"accuracy":0.5,"loss":1}"# + "\n",
            #"{"ts":"2026-12-03T09:48:35.123Z","node":"n","event":"round","round":"one","loss":1,"steps":1,"samples":1}"# + "\n",
            #"{"ts":"2026-12-03T09:48:35.123Z","node":"n","event":"membership","round":1,"known":1,"added":[1],"removed":[]}"# + "\n",
            "[1,2]\n",
        ]
        for bad in cases {
            try (full + full + bad + full).write(toFile: path, atomically: true, encoding: .utf8)
            do {
                _ = try MetricsLogReader.read(path: path)
                Issue.record("accepted \(bad)")
            } catch {
                #expect(error.message.hasPrefix("\(path):3: "), "\(error.message)")
            }
        }
        // A line far longer than any metrics line: refused, not buffered without bound.
        try String(repeating: "x", count: MetricsLogReader.maxLineBytes + 10).write(toFile: path, atomically: true, encoding: .utf8)
        #expect(throws: MetricsLogError.self) { try MetricsLogReader.read(path: path) }
        #expect(throws: MetricsLogError.self) { try MetricsLogReader.read(path: dir + "/absent.jsonl") }
        #expect(throws: MetricsLogError.self) { try MetricsLogReader.read(path: dir) }
    }
}
