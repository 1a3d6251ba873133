import Testing

@Test func placeholder_GossipMLTests() { #expect(Bool(true)) }
