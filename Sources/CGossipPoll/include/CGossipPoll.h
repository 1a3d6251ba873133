// epoll for GossipNet's Poller, with a flat interface (struct epoll_event is packed on
// x86-64, and Glibc's Swift module does not export <sys/epoll.h>). Linux only; on other
// systems the header is empty and GossipNet uses Dispatch read/write sources per socket.
#ifndef CGOSSIPPOLL_H
#define CGOSSIPPOLL_H
#if defined(__linux__)
#include <stdint.h>

enum {
    GOSSIP_POLL_IN = 0x001,      // EPOLLIN
    GOSSIP_POLL_OUT = 0x004,     // EPOLLOUT
    GOSSIP_POLL_ERR = 0x008,     // EPOLLERR
    GOSSIP_POLL_HUP = 0x010,     // EPOLLHUP
    GOSSIP_POLL_RDHUP = 0x2000,  // EPOLLRDHUP
};

/// epoll_create1(EPOLL_CLOEXEC); -1 and errno on failure.
int gossip_poll_create(void);
/// Adds `fd` with `events` (GOSSIP_POLL_* bits; EPOLLONESHOT is always added) and `token`.
int gossip_poll_add(int ep, int fd, uint32_t events, uint64_t token);
/// Re-arms `fd` with `events` (EPOLLONESHOT added).
int gossip_poll_modify(int ep, int fd, uint32_t events, uint64_t token);
/// Removes `fd`.
int gossip_poll_remove(int ep, int fd);
/// epoll_wait into two flat arrays; returns the count, or -1 and errno.
int gossip_poll_wait(int ep, uint32_t *events, uint64_t *tokens, int max, int timeout_ms);
#endif
#endif
