// GossipNet module.
