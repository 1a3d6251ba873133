// GossipWire module.
