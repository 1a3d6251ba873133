// membership-sim: GossipNode's SWIM state machine (`SwimState`, SPEC §5.10) behind the
// simulator's seam. Nothing is re-implemented here: each member is one `SwimState`, ticked at
// its own `nextDeadline`, fed every message the network delivers; its events become the
// simulator's status changes. `--swim-*` tune it as the same options tune `gossipd peer`.

import ArgumentParser
import GossipML
import GossipNode

/// The `--swim-*` options (the names and defaults of `gossipd peer`).
struct SwimSimOptions: ParsableArguments {
    @Option(name: .customLong("swim-interval-ms"), help: "SWIM probe period in ms.") var intervalMs: Int = 1000
    @Option(name: .customLong("swim-timeout-ms"), help: "SWIM: ms to wait for a direct ack before asking others.") var timeoutMs: Int = 500
    @Option(name: .customLong("swim-indirect"), help: "SWIM: members asked to probe an unanswering member (k).") var indirect: Int = 3
    @Option(name: .customLong("swim-suspicion-mult"), help: "SWIM: a suspect is declared dead after MULT x max(1, log10 N) x the period.") var suspicionMult: Int = 4
    @Option(name: .customLong("swim-retransmit-mult"), help: "SWIM: each update is piggybacked MULT x ceil(log10(N+1)) times.") var retransmitMult: Int = 4

    var config: SwimConfig {
        var c = SwimConfig()
        c.probeInterval = .milliseconds(intervalMs)
        c.probeTimeout = .milliseconds(timeoutMs)
        c.indirectProbes = indirect
        c.suspicionMult = suspicionMult
        c.retransmitMult = retransmitMult
        return c
    }

    var periodMs: Double { Double(intervalMs) }

    func validate() throws {
        if let p = config.problem() { throw ValidationError("--swim-*: \(p)") }
    }

    func describe() -> String {
        let c = config
        return "SwimState (Sources/GossipNode/Swim.swift): period \(intervalMs) ms, probe timeout \(timeoutMs) ms, k \(indirect), suspicion \(suspicionMult) x max(1, log10 N) periods, retransmit \(retransmitMult) x ceil(log10(N+1)), piggyback <= \(c.maxPiggyback) updates / \(c.maxUpdateBytes) bytes; ticked at each member's nextDeadline"
    }
}

/// One simulated member: a `SwimState`.
struct SwimSimMember: SimMembership {
    typealias Message = SwimMessage
    var state: SwimState

    mutating func simJoin(_ ids: [String], now: Duration, sends: inout [(String, SwimMessage)]) {
        state.join(ids, now: now)
    }

    mutating func simTick(now: Duration, sends: inout [(String, SwimMessage)]) {
        for s in state.tick(now: now) { sends.append((s.to, s.message)) }
    }

    mutating func simReceive(_ m: SwimMessage, from: String, now: Duration, sends: inout [(String, SwimMessage)]) {
        for s in state.receive(m, from: from, now: now) { sends.append((s.to, s.message)) }
    }

    mutating func simTakeChanges(into changes: inout [(String, SimStatus)]) {
        for e in state.takeEvents() {
            switch e.status {
            case .alive: changes.append((e.member, .alive))
            case .suspect: changes.append((e.member, .suspect))
            case .dead: changes.append((e.member, .dead))
            }
        }
    }

    var simNextDeadline: Duration? { state.nextDeadline }
}

/// Runs the simulator with SWIM members (member i seeded from the run's seed and i).
func simulateSwim(_ o: MembershipSimOptions, swim: SwimSimOptions) -> MembershipSimResult {
    let config = swim.config
    var sim = MembershipSimulator<SwimSimMember>(options: o) { i, id in
        var s = (o.seed ^ 0x7377_696D) &+ UInt64(i) &* 0x9E37_79B9_7F4A_7C15   // "swim"
        return SwimSimMember(state: SwimState(selfID: id, config: config, seed: splitMix64(&s)))
    }
    return sim.run()
}
