// Key files: exact layout, mode 0600 on write, refusal of group/other-readable files, atomic
// no-clobber writes, malformed and hostile files refused cleanly, and secrets never printed.
import Crypto
import Foundation
import Testing
@testable import GossipSecure

/// A fresh private temporary folder, removed by `cleanup()`.
struct TempDir {
    let path: String
    init() throws {
        path = FileManager.default.temporaryDirectory.appendingPathComponent("gossip-secure-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o700])
    }
    func file(_ name: String) -> String { path + "/" + name }
    func cleanup() { try? FileManager.default.removeItem(atPath: path) }
    func mode(_ name: String) throws -> Int {
        (try FileManager.default.attributesOfItem(atPath: file(name))[.posixPermissions] as! NSNumber).intValue
    }
    func entries() throws -> [String] { try FileManager.default.contentsOfDirectory(atPath: path).sorted() }
    func write(_ name: String, _ text: String, mode: Int = 0o600) throws {
        try Data(text.utf8).write(to: URL(fileURLWithPath: file(name)))
        try FileManager.default.setAttributes([.posixPermissions: mode], ofItemAtPath: file(name))
    }
}

@Suite struct KeyFileTests {
    @Test func networkKeyRoundTripsWithExactLayoutAndMode0600() throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        let key = NetworkKey.generate()
        try key.write(to: dir.file("network.key"))
        #expect(try dir.mode("network.key") == 0o600)
        let text = try String(contentsOfFile: dir.file("network.key"), encoding: .utf8)
        #expect(text == "gossip-network-key v1\n" + Hex.encode(NoiseHash.bytes(key.symmetricKey)) + "\n")
        #expect(try NetworkKey.read(from: dir.file("network.key")) == key)
        #expect(try dir.entries() == ["network.key"], "no temporary file is left behind")
    }

    @Test func identityKeyRoundTrips() throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        let id = IdentityKey.generate()
        try id.write(to: dir.file("identity.key"))
        #expect(try dir.mode("identity.key") == 0o600)
        let back = try IdentityKey.read(from: dir.file("identity.key"))
        #expect(back == id)
        #expect(back.publicKey == id.publicKey)
        #expect(try IdentityKey.publicKey(fromHex: id.publicKeyHex) == id.publicKey)
        #expect(try IdentityKey.publicKey(fromHex: id.publicKeyHex.uppercased()) == id.publicKey)
        expectNoise(.invalidConfiguration) { _ = try IdentityKey.publicKey(fromHex: "abc") }
        expectNoise(.invalidConfiguration) { _ = try IdentityKey.publicKey(fromHex: String(repeating: "g", count: 64)) }
        // A key file of the other kind is refused, saying so.
        let error = #expect(throws: NoiseError.self) { _ = try NetworkKey.read(from: dir.file("identity.key")) }
        #expect(error?.kind == .keyFile)
        #expect(error?.message.contains("another kind of key file") == true)
    }

    @Test(arguments: [0o644, 0o640, 0o604, 0o660, 0o606, 0o610, 0o601, 0o700 | 0o040])
    func groupOrOtherAccessIsRefusedWithWhatToDo(mode: Int) throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        try NetworkKey.generate().write(to: dir.file("k"))
        try FileManager.default.setAttributes([.posixPermissions: mode], ofItemAtPath: dir.file("k"))
        let error = #expect(throws: NoiseError.self) { _ = try NetworkKey.read(from: dir.file("k")) }
        #expect(error?.kind == .keyFile)
        #expect(error?.message.contains("chmod 600 \(dir.file("k"))") == true, "\(String(describing: error))")
        #expect(error?.message.contains("0\(String(mode, radix: 8))") == true)
        let idError = #expect(throws: NoiseError.self) { _ = try IdentityKey.read(from: dir.file("k")) }
        #expect(idError?.message.contains("chmod 600") == true)
    }

    @Test(arguments: [0o600, 0o400, 0o700])
    func ownerOnlyModesAreAccepted(mode: Int) throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        let key = NetworkKey.generate()
        try key.write(to: dir.file("k"))
        try FileManager.default.setAttributes([.posixPermissions: mode], ofItemAtPath: dir.file("k"))
        #expect(try NetworkKey.read(from: dir.file("k")) == key)
    }

    @Test func writeDoesNotClobberUnlessAsked() throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        let first = NetworkKey.generate(), second = NetworkKey.generate()
        try first.write(to: dir.file("k"))
        let error = #expect(throws: NoiseError.self) { try second.write(to: dir.file("k")) }
        #expect(error?.message.contains("already exists") == true)
        #expect(try NetworkKey.read(from: dir.file("k")) == first)
        #expect(try dir.entries() == ["k"])
        try second.write(to: dir.file("k"), overwrite: true)
        #expect(try NetworkKey.read(from: dir.file("k")) == second)
        #expect(try dir.mode("k") == 0o600)
        #expect(try dir.entries() == ["k"])
        // A writer whose folder does not exist says so.
        let missing = #expect(throws: NoiseError.self) { try first.write(to: dir.file("no/such/k")) }
        #expect(missing?.kind == .keyFile)
    }

    @Test func malformedAndHostileFilesAreRefusedCleanly() throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        let good = String(repeating: "ab", count: 32)
        let cases: [(String, String)] = [
            ("empty", ""),
            ("header only", "gossip-network-key v1\n"),
            ("short hex", "gossip-network-key v1\n" + String(good.dropLast(2)) + "\n"),
            ("long hex", "gossip-network-key v1\n" + good + "ab\n"),
            ("bad digit", "gossip-network-key v1\n" + String(good.dropLast()) + "z\n"),
            ("wrong version", "gossip-network-key v2\n" + good + "\n"),
            ("raw hex", good + "\n"),
            ("extra line", "gossip-network-key v1\n" + good + "\nmore\n"),
            ("leading space", "gossip-network-key v1\n " + good + "\n"),
            ("binary", String(decoding: [0xff, 0xfe, 0, 1], as: UTF8.self)),
            ("huge", "gossip-network-key v1\n" + String(repeating: "a", count: 100_000)),
        ]
        for (name, text) in cases {
            try dir.write(name, text)
            let error = #expect(throws: NoiseError.self, "\(name) was accepted") { _ = try NetworkKey.read(from: dir.file(name)) }
            #expect(error?.kind == .keyFile, "\(name)")
        }
        // Accepted variants: no final newline, CRLF line ends, uppercase hex.
        for (name, text) in [("no newline", "gossip-network-key v1\n" + good), ("crlf", "gossip-network-key v1\r\n" + good + "\r\n"),
                             ("upper", "gossip-network-key v1\n" + good.uppercased() + "\n")] {
            try dir.write(name, text)
            #expect(try NoiseHash.bytes(NetworkKey.read(from: dir.file(name)).symmetricKey) == [UInt8](repeating: 0xab, count: 32), "\(name)")
        }
        // Not a file, or no file at all.
        try FileManager.default.createDirectory(atPath: dir.file("folder"), withIntermediateDirectories: false, attributes: [.posixPermissions: 0o700])
        let folder = #expect(throws: NoiseError.self) { _ = try NetworkKey.read(from: dir.file("folder")) }
        #expect(folder?.message.contains("not a regular file") == true)
        let missing = #expect(throws: NoiseError.self) { _ = try NetworkKey.read(from: dir.file("missing")) }
        #expect(missing?.message.contains("cannot open") == true)
    }

    /// A FIFO at the key path is refused at once instead of blocking the reader forever.
    @Test(.timeLimit(.minutes(1))) func aFIFOIsRefusedWithoutBlocking() throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        #expect(mkfifo(dir.file("fifo"), 0o600) == 0)
        let error = #expect(throws: NoiseError.self) { _ = try NetworkKey.read(from: dir.file("fifo")) }
        #expect(error?.message.contains("not a regular file") == true)
    }

    @Test func secretsAreNeverPrinted() throws {
        let key = NetworkKey.generate()
        let secretHex = Hex.encode(NoiseHash.bytes(key.symmetricKey))
        var dumped = ""
        dump(key, to: &dumped)
        for text in ["\(key)", String(describing: key), String(reflecting: key), dumped, "\([key])"] {
            #expect(!text.contains(secretHex) && !text.contains(String(secretHex.prefix(8))), "network key printed in: \(text)")
            #expect(text.contains("redacted"))
        }
        let id = IdentityKey.generate()
        let privateHex = Hex.encode(id.privateKey.rawRepresentation)
        var dumpedID = ""
        dump(id, to: &dumpedID)
        for text in ["\(id)", String(reflecting: id), dumpedID, "\([id])"] {
            #expect(!text.contains(privateHex) && !text.contains(String(privateHex.prefix(8))), "private key printed in: \(text)")
            #expect(text.contains(id.publicKeyHex))
        }
    }

    @Test func constantTimeEqualIsEquality() throws {
        #expect(constantTimeEqual([1, 2, 3], [1, 2, 3]))
        #expect(!constantTimeEqual([1, 2, 3], [1, 2, 4]))
        #expect(!constantTimeEqual([1, 2, 3], [1, 2]))
        #expect(constantTimeEqual([UInt8](), [UInt8]()))
        let a = NetworkKey.generate()
        #expect(a == (try NetworkKey(bytes: NoiseHash.bytes(a.symmetricKey))))
        #expect(a != NetworkKey.generate())
        expectNoise(.invalidConfiguration) { _ = try NetworkKey(bytes: [1, 2]) }
        expectNoise(.invalidConfiguration) { _ = try IdentityKey(privateKeyBytes: [1, 2]) }
    }
}
