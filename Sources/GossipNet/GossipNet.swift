// GossipNet: POSIX sockets driven by Dispatch (Poller.swift), framed connections, RPC client/server, frame proxy.
