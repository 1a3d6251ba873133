// Training curves as one standalone SVG (no dependency, no script, no external font): three
// panels stacked over one shared time axis, each with one coloured line per node: held-out
// accuracy (`eval`), training loss (`round`) and consensus distance (`distance` of the node's
// own `ok` exchanges: the relative L2 distance between the two models before averaging, on a
// log scale when it spans more than a decade). Time is seconds since the earliest record of
// all files. A pure function from parsed records to SVG text: `gossipctl plot` and
// `gossipd demo --plot` use it; tests parse its output as XML.
import Foundation

/// What went wrong rendering a plot (no data at all).
public struct PlotError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// A moment to mark on every panel (a dashed vertical line and its label), e.g. the demo's
/// bootstrap kill. `time`: seconds since 1970, like `MetricsRecord.time`; a marker before the
/// first record is left out, a later one extends the time axis.
public struct PlotMarker: Sendable {
    public var time: Double
    public var label: String
    public init(time: Double, label: String) {
        self.time = time
        self.label = label
    }
}

/// Renders metrics records as an SVG document.
public enum SVGPlot {
    /// The most points drawn per line; longer series are thinned evenly (first and last kept),
    /// so the SVG stays small however long the run.
    public static let maxPointsPerLine = 1500

    /// Line colours, one per node in order of first appearance (Tableau 10); past ten nodes
    /// the colours repeat with a dashed line.
    static let palette = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"]

    struct Panel {
        var title: String
        var yLabel: String
        /// Series per node index: (seconds, value).
        var series: [[(Double, Double)]]
        var percent = false
        var allowLog = false
    }

    /// The SVG of `records` (from any number of files and nodes).
    /// - Throws: `PlotError` when no record carries anything to draw.
    public static func render(_ records: [MetricsRecord], title: String = "gossip training", markers: [PlotMarker] = []) throws(PlotError) -> String {
        guard !records.isEmpty else {
            throw PlotError("no metrics records to plot: the files are empty (was the peer started with --metrics-file, and did it finish a round?)")
        }
        // Nodes in order of first appearance in time.
        let sorted = records.enumerated().sorted { a, b in a.element.time != b.element.time ? a.element.time < b.element.time : a.offset < b.offset }.map(\.element)
        var nodes: [String] = []
        var index: [String: Int] = [:]
        for r in sorted where index[r.node] == nil {
            index[r.node] = nodes.count
            nodes.append(r.node)
        }
        let t0 = sorted.first!.time
        var acc = Array(repeating: [(Double, Double)](), count: nodes.count)
        var loss = acc, dist = acc
        for r in sorted {
            let i = index[r.node]!, t = r.time - t0
            switch r.event {
            case .eval(_, let a, _): if a.isFinite { acc[i].append((t, a * 100)) }
            case .round(_, let l, _, _): if l.isFinite { loss[i].append((t, l)) }
            case .exchange(_, _, let outcome, _, let d, _): if outcome == "ok", let d, d.isFinite, d >= 0 { dist[i].append((t, d)) }
            case .membership: break
            }
        }
        let panels = [
            Panel(title: "Held-out accuracy", yLabel: "accuracy (%)", series: acc, percent: true),
            Panel(title: "Training loss (mean of each round)", yLabel: "loss", series: loss),
            Panel(title: "Consensus distance (relative L2 to the partner before each ok exchange)", yLabel: "rel. L2 distance", series: dist, allowLog: true),
        ]
        guard panels.contains(where: { $0.series.contains { !$0.isEmpty } }) else {
            throw PlotError("the metrics records hold no accuracy, loss or exchange distance to plot (\(records.count) records, membership changes only)")
        }
        // Markers before the first record are left out; later ones extend the time axis (the
        // demo may kill the bootstrap after the peers' last line).
        let marks = markers.filter { $0.time.isFinite && $0.time >= t0 }.map { ($0.time - t0, $0.label) }
        let span = sorted.last!.time - t0
        let tMax = max(span, marks.map(\.0).max() ?? 0)
        return document(title: title, nodes: nodes, panels: panels, tMax: tMax, span: span, markers: marks)
    }

    // MARK: - layout

    static let width = 960.0
    static let plotLeft = 80.0, plotRight = 700.0
    static let panelHeight = 210.0, panelGap = 78.0, top = 88.0

    static func document(title: String, nodes: [String], panels: [Panel], tMax: Double, span: Double, markers: [(Double, String)] = []) -> String {
        let height = top + Double(panels.count) * (panelHeight + panelGap) - 10
        var s = """
        <?xml version="1.0" encoding="UTF-8"?>
        <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(width))" height="\(Int(height))" viewBox="0 0 \(Int(width)) \(Int(height))" font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="12">

        """
        s += "<rect width=\"100%\" height=\"100%\" fill=\"#ffffff\"/>\n"
        s += text(x: width / 2, y: 30, title, size: 20, anchor: "middle", weight: "bold")
        s += text(x: width / 2, y: 52, "\(nodes.count) node\(nodes.count == 1 ? "" : "s"), \(fmt(span, 1)) s of records; time axis: seconds since the first record", size: 12, anchor: "middle", fill: "#555555")
        // x axis shared by all panels
        let xr = tMax > 0 ? niceRange(0, tMax) : (0.0, 1.0, [0.0, 0.5, 1.0])
        for (k, p) in panels.enumerated() {
            let y0 = top + Double(k) * (panelHeight + panelGap)
            s += panel(p, index: k, y0: y0, xRange: xr, nodes: nodes.count, markers: markers)
        }
        s += legend(nodes)
        s += "</svg>\n"
        return s
    }

    static func panel(_ p: Panel, index: Int, y0: Double, xRange: (Double, Double, [Double]), nodes: Int, markers: [(Double, String)] = []) -> String {
        let x0 = plotLeft, x1 = plotRight, yTop = y0, yBottom = y0 + panelHeight
        var s = "<g id=\"panel-\(["accuracy", "loss", "distance"][min(index, 2)])\" class=\"panel\">\n"
        s += text(x: x0, y: y0 - 10, p.title, size: 14, anchor: "start", weight: "bold")
        let values = p.series.flatMap { $0.map(\.1) }
        // y scale
        var logScale = false, zeroAtBottom = false
        let yr: (Double, Double, [Double])
        if values.isEmpty {
            yr = (0, 1, [0, 0.5, 1])
        } else {
            let lo = values.min()!, hi = values.max()!
            let positive = values.filter { $0 > 0 }
            if p.allowLog, let pl = positive.min(), let ph = positive.max(), ph / pl > 10 {
                // Log scale over the positive values; exact zeros (identical models) lie on
                // the bottom edge, a decade below the smallest positive value, labelled 0.
                logScale = true
                zeroAtBottom = lo <= 0
                let a = floor(log10(pl)) - (zeroAtBottom ? 1 : 0), b = ceil(log10(ph))
                yr = (a, b, stride(from: a, through: b, by: max(1, ((b - a) / 6).rounded(.up))).map { $0 })
            } else if p.percent {
                yr = niceRange(max(0, lo - 2), min(100, hi + 2))
            } else {
                yr = niceRange(min(0, lo), hi)
            }
        }
        func X(_ t: Double) -> Double { x0 + (t - xRange.0) / (xRange.1 - xRange.0) * (x1 - x0) }
        func Y(_ v: Double) -> Double {
            if logScale && v <= 0 { return yBottom }
            let u = logScale ? log10(v) : v
            return yBottom - (u - yr.0) / (yr.1 - yr.0) * (yBottom - yTop)
        }
        s += "<rect x=\"\(fmt(x0))\" y=\"\(fmt(yTop))\" width=\"\(fmt(x1 - x0))\" height=\"\(fmt(panelHeight))\" fill=\"#fbfbfb\" stroke=\"#333333\" stroke-width=\"1\"/>\n"
        // grid and ticks
        for v in yr.2 {
            let y = yBottom - (v - yr.0) / (yr.1 - yr.0) * (yBottom - yTop)
            s += "<line x1=\"\(fmt(x0))\" y1=\"\(fmt(y))\" x2=\"\(fmt(x1))\" y2=\"\(fmt(y))\" stroke=\"#e3e3e3\" stroke-width=\"1\"/>\n"
            s += "<line x1=\"\(fmt(x0 - 5))\" y1=\"\(fmt(y))\" x2=\"\(fmt(x0))\" y2=\"\(fmt(y))\" stroke=\"#333333\"/>\n"
            let label = logScale ? (zeroAtBottom && v == yr.0 ? "0" : logLabel(v)) : tickLabel(v, step: yr.2.count > 1 ? yr.2[1] - yr.2[0] : 1)
            s += text(x: x0 - 8, y: y + 4, label, size: 11, anchor: "end")
        }
        for t in xRange.2 {
            let x = X(t)
            s += "<line x1=\"\(fmt(x))\" y1=\"\(fmt(yTop))\" x2=\"\(fmt(x))\" y2=\"\(fmt(yBottom))\" stroke=\"#eeeeee\" stroke-width=\"1\"/>\n"
            s += "<line x1=\"\(fmt(x))\" y1=\"\(fmt(yBottom))\" x2=\"\(fmt(x))\" y2=\"\(fmt(yBottom + 5))\" stroke=\"#333333\"/>\n"
            s += text(x: x, y: yBottom + 18, tickLabel(t, step: xRange.2.count > 1 ? xRange.2[1] - xRange.2[0] : 1), size: 11, anchor: "middle")
        }
        s += text(x: (x0 + x1) / 2, y: yBottom + 36, "time (s)", size: 12, anchor: "middle")
        let ly = (yTop + yBottom) / 2
        s += "<text x=\"20\" y=\"\(fmt(ly))\" font-size=\"12\" text-anchor=\"middle\" transform=\"rotate(-90 20 \(fmt(ly)))\">\(escape(p.yLabel + (logScale ? " (log)" : "")))</text>\n"
        if values.isEmpty {
            s += text(x: (x0 + x1) / 2, y: ly + 5, "no data", size: 14, anchor: "middle", fill: "#999999")
        }
        for (t, label) in markers {
            let x = X(t)
            s += "<line class=\"marker\" x1=\"\(fmt(x))\" y1=\"\(fmt(yTop))\" x2=\"\(fmt(x))\" y2=\"\(fmt(yBottom))\" stroke=\"#666666\" stroke-width=\"1.2\" stroke-dasharray=\"4 3\"/>\n"
            if index == 0 { s += text(x: x + 4, y: yTop + 14, label, size: 11, anchor: "start", fill: "#444444") }
        }
        // lines, clipped to the plot area by construction (values are inside the nice range)
        for (i, pts) in p.series.enumerated() where !pts.isEmpty {
            let color = palette[i % palette.count]
            let dash = i >= palette.count ? " stroke-dasharray=\"6 3\"" : ""
            let shown = thin(pts)
            let coords = shown.map { "\(fmt(X($0.0))),\(fmt(Y($0.1)))" }.joined(separator: " ")
            s += "<polyline class=\"series\" data-node=\"\(i)\" fill=\"none\" stroke=\"\(color)\" stroke-width=\"1.6\" stroke-linejoin=\"round\" stroke-opacity=\"0.9\"\(dash) points=\"\(coords)\"/>\n"
            if shown.count <= 30 {
                for pt in shown {
                    s += "<circle cx=\"\(fmt(X(pt.0)))\" cy=\"\(fmt(Y(pt.1)))\" r=\"2.5\" fill=\"\(color)\"/>\n"
                }
            }
        }
        s += "</g>\n"
        return s
    }

    static func legend(_ nodes: [String]) -> String {
        let x = plotRight + 30
        var s = "<g id=\"legend\">\n"
        s += text(x: x, y: top - 10, "nodes", size: 14, anchor: "start", weight: "bold")
        for (i, n) in nodes.enumerated() {
            let y = top + 14 + Double(i) * 20
            let dash = i >= palette.count ? " stroke-dasharray=\"6 3\"" : ""
            s += "<line x1=\"\(fmt(x))\" y1=\"\(fmt(y - 4))\" x2=\"\(fmt(x + 24))\" y2=\"\(fmt(y - 4))\" stroke=\"\(palette[i % palette.count])\" stroke-width=\"3\"\(dash)/>\n"
            s += text(x: x + 32, y: y, n, size: 12, anchor: "start")
        }
        s += "</g>\n"
        return s
    }

    // MARK: - helpers

    /// Evenly thinned to at most `maxPointsPerLine` points, first and last kept.
    static func thin(_ pts: [(Double, Double)]) -> [(Double, Double)] {
        guard pts.count > maxPointsPerLine else { return pts }
        let step = Double(pts.count - 1) / Double(maxPointsPerLine - 1)
        return (0..<maxPointsPerLine).map { pts[Int((Double($0) * step).rounded())] }
    }

    /// A range covering lo...hi with "nice" ticks (1, 2, 5 x 10^k), about five of them.
    static func niceRange(_ lo: Double, _ hi: Double) -> (Double, Double, [Double]) {
        var lo = lo, hi = hi
        if !(hi > lo) {
            let pad = lo == 0 ? 1 : abs(lo) * 0.1
            lo -= pad
            hi += pad
        }
        let raw = (hi - lo) / 5
        let mag = pow(10, floor(log10(raw)))
        let f = raw / mag
        let step = (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * mag
        let a = floor(lo / step + 1e-9) * step, b = ceil(hi / step - 1e-9) * step
        var ticks: [Double] = []
        var v = a
        while v <= b + step * 1e-6 {
            ticks.append(abs(v) < step * 1e-9 ? 0 : v)
            v += step
        }
        return (a, b, ticks)
    }

    static func tickLabel(_ v: Double, step: Double) -> String {
        let decimals = max(0, min(6, Int(-floor(log10(step) + 1e-9))))
        return String(format: "%.\(decimals)f", v)
    }

    static func logLabel(_ e: Double) -> String {
        let k = Int(e.rounded())
        if k >= -3 && k <= 3 { return tickLabel(pow(10, Double(k)), step: pow(10, Double(k))) }
        return "1e\(k)"
    }

    static func fmt(_ v: Double, _ decimals: Int = 1) -> String {
        guard v.isFinite else { return "0" }
        return String(format: "%.\(decimals)f", v)
    }

    static func text(x: Double, y: Double, _ t: String, size: Int, anchor: String, weight: String? = nil, fill: String? = nil) -> String {
        "<text x=\"\(fmt(x))\" y=\"\(fmt(y))\" font-size=\"\(size)\" text-anchor=\"\(anchor)\"" + (weight.map { " font-weight=\"\($0)\"" } ?? "")
            + (fill.map { " fill=\"\($0)\"" } ?? "") + ">\(escape(t))</text>\n"
    }

    /// XML text and attribute escaping; control characters XML 1.0 forbids become U+FFFD.
    static func escape(_ s: String) -> String {
        var out = ""
        for u in s.unicodeScalars {
            switch u {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&apos;"
            default:
                if u.value < 0x20 && u != "\t" && u != "\n" && u != "\r" || u.value == 0xFFFE || u.value == 0xFFFF {
                    out += "\u{FFFD}"
                } else {
                    out.unicodeScalars.append(u)
                }
            }
        }
        return out
    }

    /// Reads metrics files and renders them (what `gossipctl plot` and the demo do).
    /// - Parameter warn: told about each skipped truncated last line and unknown event kinds.
    /// - Returns: the SVG text and the number of records and nodes drawn.
    public static func render(files: [String], title: String = "gossip training", markers: [PlotMarker] = [],
                              warn: (String) -> Void = { _ in }) throws -> (svg: String, records: Int, nodes: Int) {
        var all: [MetricsRecord] = []
        for f in files {
            let m = try MetricsLogReader.read(path: f)
            if m.truncatedLastLine { warn("\(f): the last line is incomplete (a writer still writing, or cut short): skipped") }
            if m.unknownEvents > 0 { warn("\(f): \(m.unknownEvents) line(s) with an event kind this version does not know: skipped") }
            all += m.records
        }
        guard !all.isEmpty else {
            throw PlotError("no metrics records in \(files.joined(separator: ", ")): the file\(files.count == 1 ? " is" : "s are") empty (was the peer started with --metrics-file, and did it finish a round?)")
        }
        let svg = try render(all, title: title, markers: markers)
        return (svg, all.count, Set(all.map(\.node)).count)
    }
}
