// Push-sum averaging's bookkeeping (SPEC §5.5) as a pure value: the peer's mass, the pushes in
// flight, and the counters that account for every bit of mass that left or reached this node.
// No I/O and no model: the node keeps one `PushSumLedger` behind its `Mutex` (next to the model
// it de-biases) and performs the actions it returns; tests drive N ledgers through a
// deterministic simulation with random delivery order.
//
// The invariant (no loss, nothing capped): Σ over peers of (mass + mass in flight) equals
// Σ of the initial masses (the shards' row counts) at every instant. A push moves exactly
// half of the mass (halving a double is exact), the receiver adds what it got, a refused push
// is taken back by its sender. Mass is never created: a push whose outcome is unknown
// (deadline, connection lost) is counted "unconfirmed" and never taken back.

/// What the sender does with one push.
public enum PushDecision: Sendable, Equatable {
    /// Send `mass` (already taken from the ledger) with the model snapshot.
    case send(mass: Double)
    /// Fault injection (`--push-loss`): `mass` was taken from the ledger and is dropped.
    case lose(mass: Double)
    /// No push now (why: draining, one already in flight to that target, mass under the floor).
    case skip(String)
}

/// How the receiver takes an incoming push.
public enum PushReceipt: Sendable, Equatable {
    /// Merge the model with weight `used` (the claimed mass after the cap); `capped` is the
    /// part of the claim dropped by the cap (0 for an honest sender).
    case accept(own: Double, used: Double, capped: Double)
    /// Refuse (answer UNAVAILABLE); the sender takes its mass back.
    case refuse(String)
}

/// One peer's push-sum mass and its accounting. Not thread-safe by itself.
public struct PushSumLedger: Sendable, Equatable {
    /// The data this peer trains on: its shard's row count (the initial mass), or for an
    /// external peer the most samples its trainer pushed at once (`trainerSamples`, SPEC §5.12).
    /// The floor and the cap are relative to it.
    public private(set) var rows: Double
    /// Incoming mass at most `weightCap × max(mass, rows)` (SPEC §5.5).
    public let weightCap: Double
    /// The current mass w (the model z is the de-biased value x / w).
    public private(set) var mass: Double
    /// Pushes sent and not answered yet: target -> mass carried. At most one per target.
    public private(set) var inFlight: [String: Double] = [:]
    /// True once the node is stopping: no pushes leave, incoming ones are refused.
    private(set) var draining = false

    public private(set) var sent = 0, received = 0, returned = 0, unconfirmed = 0, lost = 0, capped = 0, confirmed = 0
    public private(set) var massSent = 0.0, massReceived = 0.0, massReturned = 0.0, massUnconfirmed = 0.0
    public private(set) var massLost = 0.0, massCapped = 0.0, massConfirmed = 0.0
    private(set) var discarded = 0, massDiscarded = 0.0

    /// The mass floor: a peer whose mass fell below `2^-10 × min(rows, scale)` (its pushes
    /// were lost) skips its pushes until received pushes refill it, so it cannot drain toward
    /// zero while the others keep their mass. `scale` is the mass of the sender of the last
    /// push it accepted: when the whole network lost mass (a lossy network drains every mass
    /// alike), the floor follows it down, so mixing never stops. Every 16th skipped push goes
    /// out anyway (a probe), so the network cannot freeze with every peer under its floor.
    static let floorFraction = 1.0 / 1024
    static let probeEvery = 16
    /// The sender's mass of the last accepted push (initially `rows`).
    private(set) var scale: Double
    /// Pushes skipped in a row under the floor.
    private(set) var floorSkips = 0
    /// The current floor.
    var floor: Double { min(rows, scale) * PushSumLedger.floorFraction }

    public init(rows: Double, weightCap: Double = 4, mass: Double? = nil) {
        precondition(rows > 0 && rows.isFinite && weightCap >= 1, "PushSumLedger: rows > 0, cap >= 1")
        self.rows = rows
        self.weightCap = weightCap
        self.mass = mass ?? rows
        self.scale = rows
    }

    /// An external peer's trainer pushed `samples` (SPEC §5.12): the most it ever pushed stands
    /// for its rows in the cap and the floor (a later push of fewer samples does not shrink the
    /// cap; its mass is unchanged: it grows by the pushes it receives).
    public mutating func trainerSamples(_ samples: Double) {
        guard samples.isFinite else { return }
        rows = max(rows, samples)
    }

    /// Sum of the mass in flight.
    public var massInFlight: Double { inFlight.values.reduce(0, +) }

    /// Starts a push to `target`: halves the mass and returns what to do. `lose`: the fault
    /// injection's draw says this push is lost (its half leaves the ledger, counted in `lost`).
    public mutating func beginPush(to target: String, lose: Bool = false) -> PushDecision {
        if draining { return .skip("stopping") }
        if inFlight[target] != nil { return .skip("a push to \(target) is in flight") }
        if mass < floor {
            floorSkips += 1
            if floorSkips < PushSumLedger.probeEvery { return .skip("mass \(mass) is under the floor") }
        }
        floorSkips = 0
        let half = mass / 2
        mass -= half
        sent += 1
        massSent += half
        if lose {
            lost += 1
            massLost += half
            return .lose(mass: half)
        }
        inFlight[target] = half
        return .send(mass: half)
    }

    /// The push to `target` was answered OK: its receiver added the mass.
    public mutating func pushConfirmed(to target: String) {
        guard let m = inFlight.removeValue(forKey: target) else { return }
        confirmed += 1
        massConfirmed += m
    }

    /// The push to `target` was refused by an error reply: nothing was added there, so the
    /// sender takes it back. Returns the mass to merge back (with the model it sent), or nil.
    public mutating func pushRefused(to target: String) -> Double? {
        guard let m = inFlight.removeValue(forKey: target) else { return nil }
        returned += 1
        massReturned += m
        mass += m
        return m
    }

    /// The push's outcome is unknown (deadline, connection lost): the mass may have been added
    /// or not; it is never taken back (that could create mass).
    public mutating func pushUnconfirmed(to target: String) {
        guard let m = inFlight.removeValue(forKey: target) else { return }
        unconfirmed += 1
        massUnconfirmed += m
    }

    /// Decides on a push of `claimed` mass (the caller checked it is finite and in (0, 1e12]).
    /// On `.accept` the mass is already added; the caller merges the model with
    /// `used` against `own` in the same critical section.
    public mutating func receive(_ claimed: Double) -> PushReceipt {
        if draining { return .refuse("this peer is stopping; take the mass back and push to another peer") }
        let own = mass
        let limit = weightCap * max(mass, rows)
        let used = min(claimed, limit)
        let cut = claimed - used
        if cut > 0 {
            capped += 1
            massCapped += cut
        }
        received += 1
        massReceived += used
        scale = 2 * used
        mass += used
        return .accept(own: own, used: used, capped: cut)
    }

    /// This peer found its own model the outlier (two distinct peers refused its pushes as
    /// outliers: the self-check of SPEC §5.3). Its weight must not hold the network's model
    /// back: its mass drops to at most `weightCap` times the mass the last accepted push
    /// carried (`scale / 2`), the cap of §5.3 applied the other way round, so the next pushes
    /// it accepts pull its model toward theirs. The excess is discarded (never created
    /// elsewhere; counted in `massDiscarded`). Returns the mass discarded.
    @discardableResult
    public mutating func yieldToNetwork() -> Double {
        // Before any push was accepted the scale says nothing about the others: keep the mass.
        guard received > 0 else { return 0 }
        let target = weightCap * scale / 2
        guard mass > target else { return 0 }
        let cut = mass - target
        mass = target
        discarded += 1
        massDiscarded += cut
        return cut
    }

    /// The node is stopping: no more pushes leave and incoming pushes are refused.
    public mutating func beginDraining() { draining = true }

    /// The status object.
    var report: StatusReport.PushSum {
        var r = StatusReport.PushSum()
        r.mass = mass
        r.sent = sent; r.received = received; r.returned = returned; r.unconfirmed = unconfirmed
        r.lost = lost; r.capped = capped; r.confirmed = confirmed; r.inFlight = inFlight.count
        r.massSent = massSent; r.massReceived = massReceived; r.massReturned = massReturned
        r.massUnconfirmed = massUnconfirmed; r.massLost = massLost; r.massCapped = massCapped
        r.massInFlight = massInFlight
        r.discarded = discarded; r.massDiscarded = massDiscarded
        return r
    }
}
