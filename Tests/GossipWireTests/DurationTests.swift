// The package's one Duration conversion (GossipWire/Duration.swift): fractions survive
// (issue 8, defect 3: a 500 ms linger became 0 ms through `components.seconds * 1000`).
import Testing
import GossipWire

@Suite struct DurationTests {
    @Test func secondsKeepFractions() {
        #expect(Duration.milliseconds(500).seconds == 0.5)
        #expect(Duration.seconds(2).seconds == 2)
        #expect(Duration.microseconds(1500).seconds == 0.0015)
        #expect(Duration.zero.seconds == 0)
        #expect(Duration.milliseconds(-250).seconds == -0.25)
    }

    @Test func millisecondsKeepFractions() {
        #expect(Duration.milliseconds(500).milliseconds == 500)
        #expect(Duration.microseconds(1500).milliseconds == 1.5)
        #expect(Duration.nanoseconds(1).milliseconds == 1e-6)
        #expect(Duration.seconds(3).milliseconds == 3000)
    }

    @Test func nanosecondsAreExactAndSaturate() {
        #expect(Duration.milliseconds(500).nanoseconds == 500_000_000)
        #expect(Duration.nanoseconds(7).nanoseconds == 7)
        #expect(Duration.seconds(1).nanoseconds + Duration.nanoseconds(1).nanoseconds == 1_000_000_001)
        #expect((Duration.seconds(1) + .nanoseconds(1)).nanoseconds == 1_000_000_001)
        #expect(Duration.seconds(Int64.max).nanoseconds == Int64.max)
        #expect(Duration.seconds(Int64.min).nanoseconds == Int64.min)
    }
}
