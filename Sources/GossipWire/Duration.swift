// The one conversion of Swift's `Duration` to plain numbers for the whole package: seconds and
// milliseconds as Double (fractions kept), whole nanoseconds (saturating). The Dispatch
// conversion (`dispatch`) is built on `nanoseconds` in GossipNet, because GossipWire does not
// touch Dispatch (DESIGN.md §2). Hand-written `components.seconds * 1000` once turned a 500 ms
// linger into 0 ms (issue 8, defect 3); use these instead.

extension Duration {
    /// The duration in seconds, fractions kept (500 ms is 0.5).
    public var seconds: Double {
        let c = components
        return Double(c.seconds) + Double(c.attoseconds) / 1e18
    }

    /// The duration in milliseconds, fractions kept (1.5 µs is 0.0015).
    public var milliseconds: Double {
        let c = components
        return Double(c.seconds) * 1e3 + Double(c.attoseconds) / 1e15
    }

    /// Whole nanoseconds (sub-nanosecond parts dropped), saturating at `Int64.min/max`.
    public var nanoseconds: Int64 {
        let c = components
        let (ns, overflow) = c.seconds.multipliedReportingOverflow(by: 1_000_000_000)
        if overflow { return c.seconds < 0 ? .min : .max }
        let (sum, o2) = ns.addingReportingOverflow(c.attoseconds / 1_000_000_000)
        if o2 { return c.seconds < 0 ? .min : .max }
        return sum
    }
}
