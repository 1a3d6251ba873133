import Testing

@Test func placeholder_GossipNodeTests() { #expect(Bool(true)) }
