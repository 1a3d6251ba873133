// Metrics logs and plots with the real binaries: a bootstrap and two training peers with
// --metrics-file, their logs parsed back line by line, `gossipctl plot` drawing them, the SVG
// parsed as XML and rendered to PNG (rsvg-convert, or ImageMagick when that is all there is;
// skipped with a message when neither is installed); `gossipd demo --plot`; the errors.
import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
import GossipNode
import Testing

/// Polylines per panel id and all texts of an SVG, via XMLParser (nil: not well-formed XML).
private final class SVGSummary: NSObject, XMLParserDelegate {
    var polylines: [String: Int] = [:]
    var texts: [String] = []
    var root: String?
    private var groups: [String] = []
    private var inText = false

    static func parse(_ path: String) throws -> SVGSummary {
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        let p = XMLParser(data: data)
        let s = SVGSummary()
        p.delegate = s
        guard p.parse() else { throw TimedOut(description: "\(path) is not well-formed XML: \(p.parserError.map { "\($0)" } ?? "?") line \(p.lineNumber)") }
        return s
    }
    func parser(_ parser: XMLParser, didStartElement name: String, namespaceURI: String?, qualifiedName: String?, attributes: [String: String] = [:]) {
        if root == nil { root = name }
        if name == "g" { groups.append(attributes["id"] ?? "") }
        if name == "polyline" { polylines[groups.last ?? "", default: 0] += 1 }
        if name == "text" { texts.append(""); inText = true }
    }
    func parser(_ parser: XMLParser, didEndElement name: String, namespaceURI: String?, qualifiedName: String?) {
        if name == "g" { groups.removeLast() }
        if name == "text" { inText = false }
    }
    func parser(_ parser: XMLParser, foundCharacters string: String) {
        if inText { texts[texts.count - 1] += string }
    }
}

/// The first SVG-to-PNG converter installed: rsvg-convert, else a real ImageMagick.
private func svgRasterizer() -> ((String, String) -> [String], String)? {
    for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":") {
        let rsvg = "\(dir)/rsvg-convert"
        if FileManager.default.isExecutableFile(atPath: rsvg) { return ({ svg, png in ["-o", png, svg] }, rsvg) }
    }
    for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":") {
        for name in ["magick", "convert"] {
            let exe = "\(dir)/\(name)"
            guard FileManager.default.isExecutableFile(atPath: exe),
                  let v = try? Cluster.run(exe, ["-version"], timeout: 20), v.0 == 0, v.1.contains("ImageMagick") else { continue }
            return ({ svg, png in [svg, png] }, exe)
        }
    }
    return nil
}

/// Renders `svg` to PNG when a converter is installed and checks the PNG; returns its path.
@discardableResult
private func checkRenders(_ svg: String) throws -> String? {
    guard let (args, exe) = svgRasterizer() else {
        print("PlotTests: SKIPPED rendering \(svg) to PNG: neither rsvg-convert (apt-get install librsvg2-bin) nor ImageMagick is installed")
        return nil
    }
    let png = svg + ".png"
    let (rc, out, err) = try Cluster.run(exe, args(svg, png), timeout: 60)
    #expect(rc == 0, "\(exe) failed (\(rc)): \(out) \(err)")
    let data = try Data(contentsOf: URL(fileURLWithPath: png))
    #expect(data.starts(with: [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]), "\(png) is not a PNG")
    #expect(data.count > 5_000, "\(png) is only \(data.count) bytes")
    return png
}

@Suite(.serialized) struct PlotTests {
    @Test func peersWriteMetricsLogsThatGossipctlPlots() throws {
        let c = try Cluster("plot")
        defer { c.shutdown() }
        let boot = try c.bootstrap()
        let files = ["\(c.dir)/a.jsonl", "\(c.dir)/b.jsonl"]
        let a = try c.peer(["--bootstrap", boot.endpoint.description, "--metrics-file", files[0], "--pace-ms", "100"], shard: "0/2", rounds: 30)
        let b = try c.peer(["--bootstrap", boot.endpoint.description, "--metrics-file", files[1], "--pace-ms", "100"], shard: "1/2", rounds: 30)
        try c.wait("both peers past round 30 with an exchange done", nodes: [a, b]) {
            try [a, b].allSatisfy { n in let s = try c.status(n); return s.round >= 30 && s.exchanges.done > 0 }
        }
        // Each line one JSON object with the documented keys; the node is the peer's endpoint.
        for (file, node) in zip(files, [a, b]) {
            let text = try String(contentsOfFile: file, encoding: .utf8)
            #expect(text.hasSuffix("\n"))
            var kinds: [String: Int] = [:]
            var lastTs = ""
            for line in text.split(separator: "\n") {
                let o = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], "\(file): \(line)")
                let ts = try #require(o["ts"] as? String)
                #expect(ts.count == 24 && ts.hasSuffix("Z") && ts >= lastTs, "\(ts) after \(lastTs)")
                lastTs = ts
                #expect(o["node"] as? String == node.endpoint.description)
                let kind = try #require(o["event"] as? String)
                kinds[kind, default: 0] += 1
                #expect(o["round"] is NSNumber)
                switch kind {
                case "round": #expect(o["loss"] is NSNumber && o["steps"] is NSNumber && o["samples"] is NSNumber, "\(line)")
                case "eval": #expect((o["accuracy"] as? NSNumber).map { (0...1).contains($0.doubleValue) } == true, "\(line)")
                case "exchange":
                    #expect(["ok", "local_busy", "remote_busy", "failed"].contains(o["outcome"] as? String ?? ""), "\(line)")
                    if o["outcome"] as? String == "ok" { #expect(o["distance"] is NSNumber, "\(line)") }
                case "membership": #expect(o["added"] is [Any] && o["known"] is NSNumber, "\(line)")
                default: Issue.record("unknown event \(kind)")
                }
            }
            #expect((kinds["round"] ?? 0) >= 30 && (kinds["eval"] ?? 0) >= 4 && (kinds["membership"] ?? 0) >= 1, "\(file): \(kinds)")
        }
        #expect(try [files[0], files[1]].contains { try String(contentsOfFile: $0, encoding: .utf8).contains("\"outcome\":\"ok\"") })

        // Plot them while the peers are still writing (a last line may be in flight).
        let svg = "\(c.dir)/curves.svg"
        let (rc, out, err) = try c.ctl(["plot", files[0], files[1], "--out", svg, "--title", "two peers"])
        #expect(rc == 0, "gossipctl plot exited \(rc): \(err)")
        #expect(out.hasPrefix("wrote \(svg): ") && out.contains("from 2 nodes in 2 files"), "\(out)")
        let doc = try SVGSummary.parse(svg)
        #expect(doc.root == "svg")
        #expect(doc.polylines["panel-accuracy"] == 2 && doc.polylines["panel-loss"] == 2, "\(doc.polylines)")
        #expect((doc.polylines["panel-distance"] ?? 0) >= 1, "\(doc.polylines)")
        #expect(doc.texts.contains("two peers") && doc.texts.contains(a.endpoint.description) && doc.texts.contains(b.endpoint.description))
        try checkRenders(svg)
    }

    @Test func demoPlots() throws {
        let c = try Cluster("demo-plot")
        defer { c.shutdown() }
        let svg = "\(c.dir)/demo.svg"
        let (rc, out, err) = try Cluster.run(Cluster.binary("gossipd"),
                                             ["demo", "--peers", "2", "--arch", "64,16,10", "--rounds", "8", "--local-steps", "2",
                                              "--pace-ms", "20", "--plot", svg], timeout: 240)
        #expect(rc == 0, "gossipd demo exited \(rc):\n\(out)\n\(err)")
        #expect(out.contains("plot: wrote \(svg)"), "\(out)")
        let doc = try SVGSummary.parse(svg)
        #expect(doc.polylines["panel-loss"] == 2 && doc.polylines["panel-accuracy"] == 2, "\(doc.polylines)")
        #expect(out.contains("bootstrap killed") && doc.texts.contains("bootstrap killed"), "the kill is marked: \(doc.texts)")
        try checkRenders(svg)
    }

    @Test func unusableFilesExitWithClearErrors() throws {
        let c = try Cluster("plot-errors")
        defer { c.shutdown() }
        // gossipd peer: a metrics file that cannot be opened stops it at once (73), naming it.
        let bad = "\(c.dir)/no/such/dir/m.jsonl"
        let (prc, _, perr) = try Cluster.run(Cluster.binary("gossipd"), ["peer", "--bootstrap", "127.0.0.1:9", "--metrics-file", bad], timeout: 60)
        #expect(prc == 73 && perr.contains(bad), "\(prc): \(perr)")
        // demo: an unwritable --plot is refused before anything starts.
        let (drc, _, derr) = try Cluster.run(Cluster.binary("gossipd"), ["demo", "--plot", bad], timeout: 60)
        #expect(drc == 73 && derr.contains(bad), "\(drc): \(derr)")

        // gossipctl plot: usage 64, unreadable or malformed input 66 naming file:line, unwritable output 73.
        let (urc, _, uerr) = try c.ctl(["plot", "--out", "\(c.dir)/x.svg"])
        #expect(urc == 64, "\(urc): \(uerr)")
        let (mrc, _, merr) = try c.ctl(["plot", "\(c.dir)/absent.jsonl", "--out", "\(c.dir)/x.svg"])
        #expect(mrc == 66 && merr.contains("absent.jsonl"), "\(mrc): \(merr)")
        let good = MetricsLog.line(for: .round(round: 1, loss: 1, steps: 1, samples: 1), node: "n", at: Date())
        let broken = "\(c.dir)/broken.jsonl"
        try (good + "{\"ts\": oops}\n" + good).write(toFile: broken, atomically: true, encoding: .utf8)
        let (brc, _, berr) = try c.ctl(["plot", broken, "--out", "\(c.dir)/x.svg"])
        #expect(brc == 66 && berr.contains("\(broken):2:"), "\(brc): \(berr)")
        let empty = "\(c.dir)/empty.jsonl"
        FileManager.default.createFile(atPath: empty, contents: nil)
        let (erc, _, eerr) = try c.ctl(["plot", empty, "--out", "\(c.dir)/x.svg"])
        #expect(erc == 66 && eerr.contains("empty"), "\(erc): \(eerr)")
        let fine = "\(c.dir)/fine.jsonl"
        try good.write(toFile: fine, atomically: true, encoding: .utf8)
        let (wrc, _, werr) = try c.ctl(["plot", fine, "--out", "\(c.dir)/no/dir/x.svg"])
        #expect(wrc == 73 && werr.contains("no/dir/x.svg"), "\(wrc): \(werr)")
        // --out -: the SVG on stdout.
        let (src, sout, serr) = try c.ctl(["plot", fine, "--out", "-"])
        #expect(src == 0 && sout.hasPrefix("<?xml") && sout.hasSuffix("</svg>\n"), "\(src): \(serr)")
        #expect(!FileManager.default.fileExists(atPath: "\(c.dir)/x.svg"))
    }
}
