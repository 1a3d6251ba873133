// CRC-32 as zlib (and Python's zlib.crc32) computes it: the frame payload checksum.
import CZlib

public enum Checksum {
    /// CRC-32 (IEEE 802.3, zlib's `crc32`) of `bytes`, continuing from `initial`.
    public static func crc32(_ bytes: UnsafeRawBufferPointer, initial: UInt32 = 0) -> UInt32 {
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
