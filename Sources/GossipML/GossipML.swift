// GossipML module.
