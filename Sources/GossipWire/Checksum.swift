// CRC-32 as zlib (and Python's zlib.crc32) computes it: the frame payload checksum.
//
// Hardware first: x86_64 PCLMULQDQ folding or the ARMv8 CRC32 instructions (CGossipKernels,
// chosen at run time by a CPU check), which run at close to memory speed; zlib's table-driven
// `crc32` on any other CPU. Both give the same value for every input (tests compare them on
// random lengths, alignments, 40 MB and the golden vectors).
import CGossipKernels
import CZlib

public enum Checksum {
    /// True when this CPU runs the hardware CRC-32 (PCLMULQDQ + SSE4.1, or ARMv8 CRC32).
    public static let hardwareAvailable: Bool = gossip_crc32_hw_available() != 0

    /// CRC-32 (IEEE 802.3, zlib's `crc32`) of `bytes`, continuing from `initial`.
    @inline(__always)
    public static func crc32(_ bytes: UnsafeRawBufferPointer, initial: UInt32 = 0) -> UInt32 {
        if hardwareAvailable, let p = bytes.baseAddress {
            return gossip_crc32_hw(initial, p, bytes.count)
        }
        return zlibCRC32(bytes, initial: initial)
    }

    /// zlib's table-driven CRC-32 (the fallback, and the reference the tests compare with).
    public static func zlibCRC32(_ bytes: UnsafeRawBufferPointer, initial: UInt32 = 0) -> UInt32 {
        var crc = UInt(initial)
        var p = bytes.baseAddress?.assumingMemoryBound(to: UInt8.self)
        var left = bytes.count
        while left > 0, let q = p {
            let n = Swift.min(left, 1 << 30)
            crc = CZlib.crc32(crc, q, UInt32(n))
            p = q + n
            left -= n
        }
        return UInt32(truncatingIfNeeded: crc)
    }

    public static func crc32(_ bytes: [UInt8]) -> UInt32 { bytes.withUnsafeBytes { crc32($0) } }
}
