// See include/CGossipPoll.h. No logic: each function is one epoll call.
#if defined(__linux__)
#include "CGossipPoll.h"
#include <sys/epoll.h>
#include <stddef.h>

int gossip_poll_create(void) { return epoll_create1(EPOLL_CLOEXEC); }

static int ctl(int ep, int op, int fd, uint32_t events, uint64_t token) {
    struct epoll_event ev;
    ev.events = events | EPOLLONESHOT;
    ev.data.u64 = token;
    return epoll_ctl(ep, op, fd, &ev);
}

int gossip_poll_add(int ep, int fd, uint32_t events, uint64_t token) { return ctl(ep, EPOLL_CTL_ADD, fd, events, token); }
int gossip_poll_modify(int ep, int fd, uint32_t events, uint64_t token) { return ctl(ep, EPOLL_CTL_MOD, fd, events, token); }
int gossip_poll_remove(int ep, int fd) { return epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL); }

int gossip_poll_wait(int ep, uint32_t *events, uint64_t *tokens, int max, int timeout_ms) {
    struct epoll_event evs[256];
    if (max > 256) max = 256;
    int n = epoll_wait(ep, evs, max, timeout_ms);
    for (int i = 0; i < n; i++) {
        events[i] = evs[i].events;
        tokens[i] = evs[i].data.u64;
    }
    return n;
}
#endif
