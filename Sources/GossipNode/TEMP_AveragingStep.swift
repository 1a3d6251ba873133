// TEMPORARY (deleted at merge, contract10.md): H1's PeerPushSum.swift defines
// `averagingStep()` (sync: gossipOnce(); push-sum: one push). Until then, sync only.
extension PeerNode {
    /// One averaging step: the synchronous exchange.
    func averagingStep() { gossipOnce() }
}
