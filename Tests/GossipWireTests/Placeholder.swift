import Testing

@Test func placeholder_GossipWireTests() { #expect(Bool(true)) }
