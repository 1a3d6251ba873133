// Sealing of discovery datagrams with the network key (SPEC §13.13, "Sealed datagrams",
// DatagramSeal.swift): every Announce a keyed node sends is sealed, and only datagrams that
// open with the key (fresh timestamp, nonce not seen before) are read.
import GossipSecure
import Synchronization

extension DatagramSealing {
    /// The sealing of a network with `key` (wall-clock timestamps, the seal's replay cache).
    public static func networkKey(_ key: NetworkKey) throws -> DatagramSealing {
        final class Box: Sendable {
            let seal: Mutex<DatagramSeal>
            init(_ s: DatagramSeal) { seal = Mutex(s) }
        }
        let box = Box(DatagramSeal(networkKey: key))
        return DatagramSealing(
            seal: { frame in box.seal.withLock { $0.seal(frame, nowMs: DatagramSeal.wallClockMs()) } },
            open: { datagram in box.seal.withLock { s in try? s.open(datagram, nowMs: DatagramSeal.wallClockMs()) } },
            overhead: DatagramSeal.overhead)
    }
}
