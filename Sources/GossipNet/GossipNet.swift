// GossipNet: POSIX sockets on Dispatch sources, framed connections, RPC client/server, frame proxy.
