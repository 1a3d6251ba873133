import Testing

@Test func placeholder_GossipNetTests() { #expect(Bool(true)) }
