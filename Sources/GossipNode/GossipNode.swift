// GossipNode module.
