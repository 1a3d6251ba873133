// The SVG plot: well-formed XML (parsed with XMLParser), three panels, one polyline per node
// and panel with data, a legend naming every node; robust to NaN, one point, hostile names,
// long series; nothing to draw is a clear error.
import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
@testable import GossipNode
import Testing

/// The elements of an SVG document, as parsed by XMLParser.
final class SVGElements: NSObject, XMLParserDelegate {
    struct Element { var name: String; var attributes: [String: String]; var text = ""; var group: String? }
    var elements: [Element] = []
    private var groups: [String] = []
    private var open: [Int] = []

    static func parse(_ svg: String) throws -> SVGElements {
        let p = XMLParser(data: Data(svg.utf8))
        let d = SVGElements()
        p.delegate = d
        guard p.parse() else {
            throw PlotError("not well-formed XML: \(p.parserError.map { "\($0)" } ?? "?") at line \(p.lineNumber)")
        }
        return d
    }

    func parser(_ parser: XMLParser, didStartElement name: String, namespaceURI: String?, qualifiedName: String?, attributes: [String: String] = [:]) {
        if name == "g", let id = attributes["id"] { groups.append(id) } else if name == "g" { groups.append("") }
        elements.append(Element(name: name, attributes: attributes, group: groups.last))
        open.append(elements.count - 1)
    }
    func parser(_ parser: XMLParser, didEndElement name: String, namespaceURI: String?, qualifiedName: String?) {
        open.removeLast()
        if name == "g" { groups.removeLast() }
    }
    func parser(_ parser: XMLParser, foundCharacters string: String) {
        if let i = open.last { elements[i].text += string }
    }

    func named(_ n: String, in group: String? = nil) -> [Element] {
        elements.filter { $0.name == n && (group == nil || $0.group == group) }
    }
    var texts: [String] { named("text").map(\.text) }
}

private func records(nodes: Int, rounds: Int, t0: Double = 1_796_291_315) -> [MetricsRecord] {
    var out: [MetricsRecord] = []
    for n in 0..<nodes {
        let node = "127.0.0.1:\(4000 + n)"
        for r in 1...rounds {
            let t = t0 + Double(r) * 0.5 + Double(n) * 0.01
            out.append(MetricsRecord(time: t, node: node, event: .round(round: r, loss: 2.3 / Double(r), steps: r * 10, samples: r * 1280)))
            if r % 2 == 0 { out.append(MetricsRecord(time: t, node: node, event: .eval(round: r, accuracy: 1 - 0.9 / Double(r), loss: 2 / Double(r)))) }
            out.append(MetricsRecord(time: t, node: node, event: .exchange(round: r, peer: "127.0.0.1:\(4000 + (n + 1) % nodes)", outcome: "ok", status: nil,
                                                                           distance: 0.5 / pow(2, Double(r)), seconds: 0.01)))
            if r == 3 { out.append(MetricsRecord(time: t, node: node, event: .exchange(round: r, peer: "x", outcome: "failed", status: "UNAVAILABLE", distance: nil, seconds: 3))) }
        }
        out.append(MetricsRecord(time: t0, node: node, event: .membership(round: 1, known: nodes, added: [], removed: [])))
    }
    return out
}

@Suite struct SVGPlotTests {
    @Test func threePanelsAPolylinePerNodeAndALegend() throws {
        let svg = try SVGPlot.render(records(nodes: 3, rounds: 20), title: "demo <run> & co")
        let doc = try SVGElements.parse(svg)
        #expect(doc.elements.first?.name == "svg" && doc.elements.first?.attributes["xmlns"] == "http://www.w3.org/2000/svg")
        for panel in ["panel-accuracy", "panel-loss", "panel-distance"] {
            let lines = doc.named("polyline", in: panel)
            #expect(lines.count == 3, "\(panel): \(lines.count) polylines")
            #expect(Set(lines.compactMap { $0.attributes["stroke"] }).count == 3, "\(panel): one colour per node")
            for l in lines {
                let pts = (l.attributes["points"] ?? "").split(separator: " ")
                #expect(pts.count >= 10, "\(panel): \(pts.count) points")
                for p in pts {
                    let xy = p.split(separator: ",").compactMap { Double($0) }
                    #expect(xy.count == 2 && xy.allSatisfy(\.isFinite), "\(p)")
                    // inside the plot area
                    #expect(xy[0] >= SVGPlot.plotLeft - 0.1 && xy[0] <= SVGPlot.plotRight + 0.1, "\(panel) x \(xy[0])")
                }
            }
        }
        // ticks and labels
        #expect(doc.texts.contains("demo <run> & co"))
        #expect(doc.texts.filter { $0 == "time (s)" }.count == 3)
        #expect(doc.texts.contains("accuracy (%)") && doc.texts.contains("loss") && doc.texts.contains("rel. L2 distance (log)"))
        #expect(doc.named("text", in: "panel-accuracy").count > 8)
        let legend = doc.named("text", in: "legend").map(\.text)
        #expect(legend.contains("127.0.0.1:4000") && legend.contains("127.0.0.1:4001") && legend.contains("127.0.0.1:4002"))
    }

    /// Failed exchanges carry no distance and draw nothing; the distance panel plots the node's own ok exchanges.
    @Test func distanceUsesOkExchangesOnly() throws {
        let recs = [
            MetricsRecord(time: 10, node: "a", event: .exchange(round: 1, peer: "b", outcome: "failed", status: "UNAVAILABLE", distance: 5, seconds: 1)),
            MetricsRecord(time: 11, node: "a", event: .exchange(round: 1, peer: "b", outcome: "ok", status: nil, distance: 0.02, seconds: 1)),
            MetricsRecord(time: 12, node: "a", event: .exchange(round: 2, peer: "b", outcome: "ok", status: nil, distance: 0.01, seconds: 1)),
        ]
        let doc = try SVGElements.parse(try SVGPlot.render(recs))
        let lines = doc.named("polyline", in: "panel-distance")
        #expect(lines.count == 1 && (lines[0].attributes["points"] ?? "").split(separator: " ").count == 2)
        #expect(doc.named("text", in: "panel-accuracy").contains { $0.text == "no data" })
    }

    @Test func onePointAndNaNsAreDrawable() throws {
        let recs = [
            MetricsRecord(time: 5, node: "solo", event: .round(round: 1, loss: .nan, steps: 1, samples: 1)),
            MetricsRecord(time: 5, node: "solo", event: .round(round: 2, loss: 1.5, steps: 2, samples: 2)),
            MetricsRecord(time: 5, node: "solo", event: .eval(round: 2, accuracy: .infinity, loss: .nan)),
        ]
        let svg = try SVGPlot.render(recs)
        #expect(!svg.contains("nan") && !svg.contains("inf"))
        let doc = try SVGElements.parse(svg)
        #expect(doc.named("polyline", in: "panel-loss").count == 1)
        #expect(doc.named("circle", in: "panel-loss").count == 1, "a lone point gets a marker")
        #expect(doc.named("polyline", in: "panel-accuracy").isEmpty)
        #expect(doc.named("text", in: "panel-distance").contains { $0.text == "no data" })
    }

    @Test func nothingToDrawIsAClearError() {
        #expect(throws: PlotError.self) { try SVGPlot.render([]) }
        let onlyMembership = [MetricsRecord(time: 1, node: "a", event: .membership(round: 1, known: 2, added: ["b"], removed: []))]
        do {
            _ = try SVGPlot.render(onlyMembership)
            Issue.record("rendered membership only")
        } catch {
            #expect(error.message.contains("no accuracy, loss or exchange distance"), "\(error.message)")
        }
    }

    /// Node names come from files anyone may write: markup in them stays text.
    @Test func hostileNodeNamesStayText() throws {
        let evil = "<script>alert(1)</script>\"&'\u{1}"
        let svg = try SVGPlot.render([MetricsRecord(time: 1, node: evil, event: .round(round: 1, loss: 1, steps: 1, samples: 1))])
        let doc = try SVGElements.parse(svg)
        #expect(doc.named("script").isEmpty)
        #expect(doc.named("text", in: "legend").contains { $0.text.hasPrefix("<script>alert(1)</script>\"&'") })
    }

    /// A long run's series is thinned, so the SVG stays small.
    @Test func longSeriesAreThinned() throws {
        let recs = (0..<20_000).map { MetricsRecord(time: Double($0), node: "a", event: .round(round: $0, loss: 1 / Double($0 + 1), steps: $0, samples: $0)) }
        let svg = try SVGPlot.render(recs)
        let doc = try SVGElements.parse(svg)
        let pts = (doc.named("polyline", in: "panel-loss").first?.attributes["points"] ?? "").split(separator: " ")
        #expect(pts.count == SVGPlot.maxPointsPerLine)
        #expect(svg.utf8.count < 100_000, "\(svg.utf8.count) bytes")
    }

    /// More nodes than colours: dashes tell the second ten apart.
    @Test func manyNodes() throws {
        let svg = try SVGPlot.render(records(nodes: 12, rounds: 4))
        let doc = try SVGElements.parse(svg)
        #expect(doc.named("polyline", in: "panel-loss").count == 12)
        #expect(doc.named("polyline", in: "panel-loss").filter { $0.attributes["stroke-dasharray"] != nil }.count == 2)
    }

    /// A marker (the demo's bootstrap kill) is a dashed line on every panel, labelled once;
    /// one before the first record is left out.
    @Test func markers() throws {
        let recs = records(nodes: 2, rounds: 6)
        let t0 = recs.map(\.time).min()!
        let svg = try SVGPlot.render(recs, markers: [PlotMarker(time: t0 + 1, label: "bootstrap killed"), PlotMarker(time: t0 - 1, label: "earlier")])
        let doc = try SVGElements.parse(svg)
        for panel in ["panel-accuracy", "panel-loss", "panel-distance"] {
            #expect(doc.named("line", in: panel).filter { $0.attributes["class"] == "marker" }.count == 1, "\(panel)")
        }
        #expect(doc.texts.filter { $0 == "bootstrap killed" }.count == 1 && !doc.texts.contains("earlier"))
    }

    @Test func niceTicks() {
        let (lo, hi, ticks) = SVGPlot.niceRange(0, 7.3)
        #expect(lo == 0 && hi == 8 && ticks == [0, 2, 4, 6, 8])
        let r = SVGPlot.niceRange(3, 3)
        #expect(r.0 < 3 && r.1 > 3 && r.2.count >= 2)
        #expect(SVGPlot.tickLabel(0.25, step: 0.05) == "0.25")
        #expect(SVGPlot.logLabel(-2) == "0.01" && SVGPlot.logLabel(-6) == "1e-6")
    }

    /// The files' way in: several files, each a node; the reader's notes are passed on.
    @Test func renderFiles() throws {
        let dir = NSTemporaryDirectory() + "gossip-plotfiles-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var files: [String] = []
        for n in 0..<2 {
            let path = "\(dir)/peer\(n).jsonl"
            let log = try MetricsLog(path: path, node: "127.0.0.1:\(5000 + n)")
            for r in 1...5 { log.record(.round(round: r, loss: 1 / Double(r), steps: r, samples: r), at: Date(timeIntervalSince1970: 1000 + Double(r))) }
            files.append(path)
        }
        // A writer cut short in the middle of its last line.
        let h = try FileHandle(forWritingTo: URL(fileURLWithPath: files[1]))
        try h.seekToEnd()
        try h.write(contentsOf: Data("{\"ts\":\"2026-12".utf8))
        try h.close()
        var notes: [String] = []
        let r = try SVGPlot.render(files: files) { notes.append($0) }
        #expect(r.records == 10 && r.nodes == 2, "\(r.records) \(r.nodes)")
        #expect(notes.count == 1 && notes[0].contains(files[1]) && notes[0].contains("incomplete"), "\(notes)")
        let empty = "\(dir)/empty.jsonl"
        FileManager.default.createFile(atPath: empty, contents: nil)
        do {
            _ = try SVGPlot.render(files: [empty])
            Issue.record("rendered an empty file")
        } catch {
            #expect("\(error)".contains(empty) && "\(error)".contains("empty"), "\(error)")
        }
    }
}
