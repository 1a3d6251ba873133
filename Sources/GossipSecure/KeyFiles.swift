// Key files (issue 9 point 1): the 32-byte network key (the Noise PSK) and a node's Curve25519
// identity key. Format, one documented text layout for both (two lines, LF-terminated):
//
//     gossip-network-key v1            |  gossip-identity-key v1 curve25519
//     <64 lowercase hex digits>        |  <64 lowercase hex digits: the private key>
//
// The reader refuses a file that group or others may access (mode & 0o077 != 0, as ssh does),
// anything but a regular file, and files over 4 KiB. The writer creates the file with mode
// 0600 atomically: a temporary file in the same folder, fsync, then link (no overwrite) or
// rename (overwrite). Secrets never appear in description, debugDescription or dump().
import Crypto
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Compares two byte sequences in time that depends only on their lengths.
public func constantTimeEqual(_ a: some Collection<UInt8>, _ b: some Collection<UInt8>) -> Bool {
    guard a.count == b.count else { return false }
    var diff: UInt8 = 0
    for (x, y) in zip(a, b) { diff |= x ^ y }
    return diff == 0
}

/// Lowercase hex of bytes, and exact-length hex decoding (key files, key logs).
public enum Hex {
    public static func encode(_ bytes: some Sequence<UInt8>) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        for b in bytes { out.append(digits[Int(b >> 4)]); out.append(digits[Int(b & 15)]) }
        return String(decoding: out, as: UTF8.self)
    }

    /// Decodes exactly `count` bytes of hex (either case), or nil.
    public static func decode(_ text: Substring, count: Int) -> [UInt8]? {
        let chars = Array(text.utf8)
        guard chars.count == count * 2 else { return nil }
        func nibble(_ c: UInt8) -> UInt8? {
            switch c {
            case 48...57: c - 48
            case 97...102: c - 87
            case 65...70: c - 55
            default: nil
            }
        }
        var out: [UInt8] = []
        out.reserveCapacity(count)
        for i in stride(from: 0, to: chars.count, by: 2) {
            guard let hi = nibble(chars[i]), let lo = nibble(chars[i + 1]) else { return nil }
            out.append(hi << 4 | lo)
        }
        return out
    }
}

/// Reading and writing the key-file layout shared by `NetworkKey` and `IdentityKey`.
enum KeyFile {
    static let maxSize = 4096

    static func encode(header: String, secret: [UInt8]) -> [UInt8] {
        Array("\(header)\n\(Hex.encode(secret))\n".utf8)
    }

    /// Reads `path`, checks its type, size and permissions, and returns the 32 secret bytes.
    static func read(_ path: String, header: String, what: String) throws(NoiseError) -> [UInt8] {
        let fd: Int32
        // O_NONBLOCK: opening a FIFO by mistake must not hang; fstat then refuses it.
        do { fd = try KeyFileSyscall.open(path, O_RDONLY | O_NONBLOCK) } catch {
            throw NoiseError(.keyFile, "cannot open \(what) file \(path): \(error.reason); check the path (create one with `gossipctl keygen`)")
        }
        defer { KeyFileSyscall.close(fd) }
        let bytes: [UInt8]
        do {
            let st = try KeyFileSyscall.fstat(fd)
            guard st.st_mode & S_IFMT == S_IFREG else {
                throw NoiseError(.keyFile, "\(what) file \(path) is not a regular file: point at the key file itself")
            }
            let mode = st.st_mode & 0o777
            guard mode & 0o077 == 0 else {
                throw NoiseError(.keyFile, "\(what) file \(path) has mode 0\(String(mode, radix: 8)): group or others may read it, so it is refused. Run `chmod 600 \(path)` (and replace the key if others may have copied it)")
            }
            bytes = try KeyFileSyscall.readAll(fd, limit: maxSize)
        } catch let error as NoiseError {
            throw error
        } catch let error as SyscallError {
            throw NoiseError(.keyFile, "cannot read \(what) file \(path): \(error.call) failed: \(error.reason)")
        } catch {
            throw NoiseError(.keyFile, "cannot read \(what) file \(path): \(error)")
        }
        guard bytes.count <= maxSize else {
            throw NoiseError(.keyFile, "\(what) file \(path) is larger than \(maxSize) bytes, which no key file is: check the path")
        }
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw NoiseError(.keyFile, "\(what) file \(path) is not text: expected the line \"\(header)\" then 64 hex digits")
        }
        // Split on LF bytes (a Swift Character would treat CRLF as one), then drop a CR before it.
        let lines = text.utf8.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false)
            .map { Substring($0.last == UInt8(ascii: "\r") ? $0.dropLast() : $0) }
        let content = lines.last == "" ? lines.dropLast() : lines[...]
        guard content.count == 2, content.first == Substring(header) else {
            throw NoiseError(.keyFile, "\(what) file \(path) does not have the expected layout: the line \"\(header)\" then one line of 64 hex digits (is it another kind of key file?)")
        }
        guard let secret = Hex.decode(content.last!, count: 32) else {
            throw NoiseError(.keyFile, "\(what) file \(path): the second line must be exactly 64 hex digits (32 bytes)")
        }
        return secret
    }

    /// Writes `contents` to `path` with mode 0600, atomically. Without `overwrite`, an existing
    /// file is left alone and the call throws.
    static func write(_ contents: [UInt8], to path: String, overwrite: Bool, what: String) throws(NoiseError) {
        let url = URL(fileURLWithPath: path)
        let dir = url.deletingLastPathComponent().path
        let tmp = dir + "/." + url.lastPathComponent + ".tmp-" + Hex.encode((0..<8).map { _ in UInt8.random(in: 0...255) })
        do throws(SyscallError) {
            let fd = try KeyFileSyscall.open(tmp, O_WRONLY | O_CREAT | O_EXCL, 0o600)
            do throws(SyscallError) {
                try KeyFileSyscall.fchmod(fd, 0o600)  // umask may have removed bits; set exactly 0600
                try KeyFileSyscall.writeAll(fd, contents)
                try KeyFileSyscall.fsync(fd)
                KeyFileSyscall.close(fd)
            } catch {
                KeyFileSyscall.close(fd)
                throw error
            }
        } catch {
            KeyFileSyscall.unlink(tmp)
            throw NoiseError(.keyFile, "cannot write \(what) file \(path): \(error.call) failed: \(error.reason); check that \(dir) exists and is writable")
        }
        defer { KeyFileSyscall.unlink(tmp) }
        do throws(SyscallError) {
            if overwrite {
                try KeyFileSyscall.rename(tmp, path)
            } else {
                try KeyFileSyscall.link(tmp, path)
            }
        } catch {
            if error.errno == EEXIST {
                throw NoiseError(.keyFile, "\(what) file \(path) already exists and was left unchanged: remove it first, or choose another path")
            }
            throw NoiseError(.keyFile, "cannot create \(what) file \(path): \(error.call) failed: \(error.reason)")
        }
        // Make the new directory entry durable.
        if let dfd = try? KeyFileSyscall.open(dir, O_RDONLY | O_DIRECTORY) {
            try? KeyFileSyscall.fsync(dfd)
            KeyFileSyscall.close(dfd)
        }
    }
}

/// The 32-byte network key: the PSK of the gossip channel's Noise_XXpsk3 handshake.
///
/// Never printed: `description`, `debugDescription` and `dump()` show only "<redacted>".
/// `==` compares in constant time.
public struct NetworkKey: Sendable, Equatable, CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    /// Key length in bytes.
    public static let length = 32
    /// The first line of a network key file.
    public static let fileHeader = "gossip-network-key v1"

    /// The key, for `HandshakeState(psks:)`.
    public let symmetricKey: SymmetricKey

    /// A key from 32 bytes.
    /// - Throws: `.invalidConfiguration` for any other length.
    public init(bytes: [UInt8]) throws(NoiseError) {
        guard bytes.count == Self.length else {
            throw NoiseError(.invalidConfiguration, "a network key is \(Self.length) bytes, got \(bytes.count)")
        }
        symmetricKey = SymmetricKey(data: bytes)
    }

    /// A fresh random key from the system's secure generator.
    public static func generate() -> NetworkKey {
        try! NetworkKey(bytes: NoiseHash.bytes(SymmetricKey(size: .bits256)))
    }

    /// Reads a network key file; see the file format above.
    /// - Throws: `.keyFile` when the file is missing, not private (chmod 600), or malformed.
    public static func read(from path: String) throws(NoiseError) -> NetworkKey {
        try NetworkKey(bytes: KeyFile.read(path, header: fileHeader, what: "network key"))
    }

    /// Writes this key to `path` with mode 0600, atomically.
    /// - Throws: `.keyFile`, also when the file exists and `overwrite` is false.
    public func write(to path: String, overwrite: Bool = false) throws(NoiseError) {
        try KeyFile.write(KeyFile.encode(header: Self.fileHeader, secret: NoiseHash.bytes(symmetricKey)),
                          to: path, overwrite: overwrite, what: "network key")
    }

    public static func == (a: NetworkKey, b: NetworkKey) -> Bool {
        a.symmetricKey.withUnsafeBytes { x in b.symmetricKey.withUnsafeBytes { y in constantTimeEqual(x, y) } }
    }

    public var description: String { "NetworkKey(<redacted>)" }
    public var debugDescription: String { description }
    public var customMirror: Mirror { Mirror(self, children: ["key": "<redacted>"]) }
}

/// A node's identity: a Curve25519 key pair, the static key `s` of the Noise handshake.
///
/// `description` shows the public key only; the private key is never printed. `==` compares
/// the private keys in constant time.
public struct IdentityKey: Sendable, Equatable, CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    /// The first line of an identity key file.
    public static let fileHeader = "gossip-identity-key v1 curve25519"

    /// The private key, for `HandshakeState(s:)`.
    public let privateKey: Curve25519.KeyAgreement.PrivateKey

    /// An identity from its 32-byte private key.
    /// - Throws: `.invalidConfiguration` for any other length.
    public init(privateKeyBytes: [UInt8]) throws(NoiseError) {
        do {
            privateKey = try Curve25519.KeyAgreement.PrivateKey(rawRepresentation: privateKeyBytes)
        } catch {
            throw NoiseError(.invalidConfiguration, "a Curve25519 private key is 32 bytes, got \(privateKeyBytes.count)")
        }
    }

    /// A fresh random identity.
    public static func generate() -> IdentityKey {
        try! IdentityKey(privateKeyBytes: Array(Curve25519.KeyAgreement.PrivateKey().rawRepresentation))
    }

    /// The 32-byte public key that peers see.
    public var publicKey: [UInt8] { Array(privateKey.publicKey.rawRepresentation) }
    /// The public key as 64 lowercase hex digits (how status, peers and `--admin-key` show it).
    public var publicKeyHex: String { Hex.encode(publicKey) }

    /// Parses a public key given as 64 hex digits (e.g. an `--admin-key` argument).
    /// - Throws: `.invalidConfiguration` saying what is expected.
    public static func publicKey(fromHex text: String) throws(NoiseError) -> [UInt8] {
        guard let bytes = Hex.decode(Substring(text), count: 32) else {
            throw NoiseError(.invalidConfiguration, "\"\(text)\" is not a public key: expected 64 hex digits (as `gossipctl status` shows a node's key)")
        }
        return bytes
    }

    /// Reads an identity key file; see the file format above.
    /// - Throws: `.keyFile` when the file is missing, not private (chmod 600), or malformed.
    public static func read(from path: String) throws(NoiseError) -> IdentityKey {
        try IdentityKey(privateKeyBytes: KeyFile.read(path, header: fileHeader, what: "identity key"))
    }

    /// Writes this identity to `path` with mode 0600, atomically.
    /// - Throws: `.keyFile`, also when the file exists and `overwrite` is false.
    public func write(to path: String, overwrite: Bool = false) throws(NoiseError) {
        try KeyFile.write(KeyFile.encode(header: Self.fileHeader, secret: Array(privateKey.rawRepresentation)),
                          to: path, overwrite: overwrite, what: "identity key")
    }

    public static func == (a: IdentityKey, b: IdentityKey) -> Bool {
        constantTimeEqual(a.privateKey.rawRepresentation, b.privateKey.rawRepresentation)
    }

    public var description: String { "IdentityKey(public: \(publicKeyHex))" }
    public var debugDescription: String { description }
    public var customMirror: Mirror { Mirror(self, children: ["publicKey": publicKeyHex]) }
}
