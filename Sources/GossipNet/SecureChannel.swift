// The encrypted channel of SPEC §13 without I/O: the public configuration (ChannelSecurity,
// KeyLog), the handshake phase as a value-type state machine over GossipSecure's
// HandshakeState (strict lengths, a buffer of at most 2 + 96 bytes, plaintext detection), and
// the record layer's sealer and opener (records of at most 65519 plaintext bytes, nonces in
// order, Rekey every `rekeyInterval` records, batches sealed and opened in parallel).
// `Connection` owns one of each and performs the I/O.
//
// Threat model of this layer (SPEC §13.9): an outsider without the network key completes no
// handshake, so nothing it sends is decoded as a frame and it makes a connection allocate at
// most 98 bytes; altered, replayed, reordered or truncated records close the connection;
// no nonce is used twice. Not defended here: what an authenticated member sends (GossipNode
// bounds that), and the cost of handshakes themselves (each attempt costs the responder a
// key generation and two DH operations; `ServerConfig.maxConnections` and the deadline bound
// how many run at once).
import Dispatch
import GossipSecure
import GossipWire
import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// What a secure connection needs: the network key (the Noise PSK), this node's identity
/// (its static key), the handshake deadline and an optional key log.
public struct ChannelSecurity: Sendable {
    /// The 32-byte network key every member holds; the PSK of `Noise_XXpsk3`.
    public var networkKey: NetworkKey
    /// This node's Curve25519 key pair; peers see its public key.
    public var identity: IdentityKey
    /// A connection whose handshake has not completed this long after accept (responder) or
    /// connect (initiator) is closed.
    public var handshakeTimeout: Duration = .seconds(5)
    /// Where session keys are written (SSLKEYLOGFILE-style) for framedump; nil: nowhere.
    public var keyLog: KeyLog?
    /// Records per direction between two Noise Rekey calls (SPEC §13.5: 65536). Internal so a
    /// test can use a tiny interval; both sides must use the same value.
    var rekeyInterval: UInt64 = SecureChannel.rekeyInterval

    public init(networkKey: NetworkKey, identity: IdentityKey, keyLog: KeyLog? = nil) {
        self.networkKey = networkKey
        self.identity = identity
        self.keyLog = keyLog
    }
}

/// An append-only key log (SPEC §13.7): one line per session,
/// `GOSSIP_NOISE_AESGCM <e_i> <k_i2r> <k_r2i>`, written with one `write(2)` each (no user-space
/// buffering, so a line is on disk as soon as the session starts). The file is created with
/// mode 0600; an existing file that group or others can read is refused. Thread-safe.
public final class KeyLog: Sendable {
    public let path: String
    private let fd: Int32
    private let lock = Mutex(())

    /// Opens (creates) `path` for appending.
    /// - Throws: `RPCError(.invalidArgument)` naming the path and what to do when it cannot be
    ///   opened, is not a regular file, or has group/other permission bits.
    public init(path: String) throws(RPCError) {
        self.path = path
        do {
            fd = try Sys.openKeyLog(path)
        } catch let e as SyscallError {
            throw RPCError(.invalidArgument, "cannot open key log \(path): \(Sys.errorText(e.errno)); pick a writable path")
        } catch let e as RPCError {
            throw e
        } catch {
            throw RPCError(.invalidArgument, "cannot open key log \(path): \(error)")
        }
    }

    deinit { Sys.close(fd) }

    /// Appends one line (text must end with a newline).
    func append(_ line: String) {
        var bytes = Array(line.utf8)
        lock.withLock { _ in
            bytes.withUnsafeMutableBytes { b in Sys.writeAll(fd, UnsafeRawBufferPointer(b)) }
        }
    }
}

/// Constants of the channel (SPEC §13).
enum SecureChannel {
    /// `Noise_XXpsk3_25519_AESGCM_SHA256`.
    static let noiseProtocol = NoiseProtocol.gossipChannel(cipher: .aesGCM)
    /// The prologue both sides mix in: the 8 ASCII bytes `gossip/2`.
    static let prologue: [UInt8] = Array("gossip/2".utf8)
    /// Handshake message lengths with empty payloads: 48, 96, 64.
    static let messageLengths = (0..<3).map { noiseProtocol.pattern.messageLength($0, payloadLength: 0) }
    /// The most plaintext one record carries.
    static let maxRecordPlaintext = NoiseTransport.maxPlaintextLength
    /// The smallest valid record body: one plaintext byte and the 16-byte tag.
    static let minRecordLength = 1 + NoiseCipher.tagLength
    /// Wire bytes of a full record: the 2-byte length and 65535 bytes.
    static let fullRecordWireBytes = 2 + NoiseTransport.maxMessageLength
    /// Records per direction between Rekeys.
    static let rekeyInterval: UInt64 = 65536
    /// Records sealed or opened in one batch (in parallel when there are several).
    static let batchRecords = 16

    /// The plaintext connection-level error a secure server answers to a plaintext client.
    static let plaintextClientText = "this node requires an encrypted channel (Noise_XXpsk3_25519_AESGCM_SHA256, SPEC §13): start the client with --network-key FILE"

    /// Whether the first 5 bytes look like a plaintext frame header (SPEC §13.8): a
    /// little-endian length >= 24, then a protocol version 1 or 2.
    static func looksLikePlaintextFrame(_ b: [UInt8]) -> Bool {
        guard b.count >= 5 else { return false }
        let length = UInt32(b[0]) | UInt32(b[1]) << 8 | UInt32(b[2]) << 16 | UInt32(b[3]) << 24
        return length >= UInt32(FrameHeader.size) && (b[4] == 1 || b[4] == 2)
    }

    /// One key-log line for a session.
    static func keyLogLine(initiatorEphemeral: [UInt8], initiatorToResponder: CipherState, responderToInitiator: CipherState) -> String {
        let k1 = initiatorToResponder.exportKeyForKeyLog() ?? []
        let k2 = responderToInitiator.exportKeyForKeyLog() ?? []
        return "GOSSIP_NOISE_AESGCM \(hex(initiatorEphemeral)) \(hex(k1)) \(hex(k2))\n"
    }

    static func hex(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out = [UInt8]()
        out.reserveCapacity(bytes.count * 2)
        for b in bytes { out.append(digits[Int(b >> 4)]); out.append(digits[Int(b & 15)]) }
        return String(decoding: out, as: UTF8.self)
    }
}

/// Why a handshake failed.
enum HandshakeFailure: Sendable, CustomStringConvertible {
    /// The peer speaks the plaintext protocol (its first bytes look like a frame header).
    case plaintextPeer
    /// Bytes that are not our handshake (wrong length prefix, garbage).
    case malformed(String)
    /// Noise refused a message (wrong network key, altered bytes, bad public key).
    case noise(String)

    var description: String {
        switch self {
        case .plaintextPeer: "the peer speaks the plaintext protocol"
        case .malformed(let s): s
        case .noise(let s): s
        }
    }
}

/// The handshake phase of one connection (SPEC §13.2) as a value with no I/O: the owner
/// reads at most `wanted` bytes, passes them to `consume`, and performs the outcome.
/// Invariant: it never buffers more than 2 + 96 bytes, and it decodes nothing but the
/// three fixed-length handshake messages.
struct ChannelHandshake {
    enum Outcome {
        /// Read more (at most `wanted` bytes).
        case needMore
        /// Responder: send these bytes (message 2, framed), then read message 3.
        case send([UInt8])
        /// Initiator: message 2 read; the peer proved this static key. Call `finish()` to get
        /// message 3 and the transport, or close to refuse the peer.
        case verify(peerStatic: [UInt8])
        /// Responder: message 3 read; the channel is established.
        case established(NoiseTransport)
        /// Close; nothing more is sent (except the plaintext answer of `.plaintextPeer`).
        case failed(HandshakeFailure)
    }

    let role: HandshakeState.Role
    private var noise: HandshakeState
    /// The bytes of the message being read (length prefix included): at most 2 + 96.
    private(set) var buffer: [UInt8] = []
    /// Index of the message being read (responder: 0 then 2; initiator: 1).
    private var reading: Int
    /// The initiator's ephemeral public key (message 1, bytes 0..<32), for the key log.
    private(set) var initiatorEphemeral: [UInt8] = []
    private var done = false

    static let maxBuffer = 2 + 96

    /// - Parameter ephemeral: a fixed ephemeral key, for golden vectors only.
    init(role: HandshakeState.Role, security: ChannelSecurity, ephemeral: IdentityKey? = nil) throws(NoiseError) {
        self.role = role
        noise = try HandshakeState(protocol: SecureChannel.noiseProtocol, role: role, prologue: SecureChannel.prologue,
                                   s: security.identity.privateKey, e: ephemeral?.privateKey,
                                   psks: [security.networkKey.symmetricKey])
        reading = role == .initiator ? 1 : 0
        buffer.reserveCapacity(Self.maxBuffer)
    }

    /// Initiator: message 1, framed (`00 30` + 48 bytes).
    mutating func start() throws(NoiseError) -> [UInt8] {
        precondition(role == .initiator)
        let m = try noise.writeMessage().message
        initiatorEphemeral = Array(m[0..<32])
        return Self.framed(m)
    }

    /// Initiator, after `.verify`: message 3 (framed) and the transport.
    mutating func finish() throws(NoiseError) -> (message: [UInt8], transport: NoiseTransport) {
        precondition(role == .initiator && reading == 2)
        let r = try noise.writeMessage()
        done = true
        return (Self.framed(r.message), r.transport!)
    }

    private var expected: Int { SecureChannel.messageLengths[reading] }

    /// How many bytes to read next (never past the current message).
    var wanted: Int {
        if done { return 0 }
        if buffer.count < 2 { return 2 - buffer.count }
        let prefix = Int(buffer[0]) << 8 | Int(buffer[1])
        if prefix == expected { return 2 + expected - buffer.count }
        return Swift.max(0, 5 - buffer.count)   // enough to tell a plaintext frame from garbage
    }

    /// Takes bytes that were read (at most `wanted`).
    mutating func consume(_ bytes: UnsafeRawBufferPointer) -> Outcome {
        precondition(bytes.count <= wanted, "read past the handshake message")
        buffer.append(contentsOf: bytes)
        guard buffer.count >= 2 else { return .needMore }
        let prefix = Int(buffer[0]) << 8 | Int(buffer[1])
        let number = reading + 1
        if prefix != expected {
            // Message 3 comes from a peer that already spoke Noise: no plaintext guess there.
            let detect = reading != 2
            if detect && buffer.count < 5 { return .needMore }
            done = true
            if detect && SecureChannel.looksLikePlaintextFrame(buffer) { return .failed(.plaintextPeer) }
            return .failed(.malformed("handshake message \(number) announced \(prefix) bytes where \(SecureChannel.noiseProtocol.name) with empty payloads has exactly \(expected)"))
        }
        guard buffer.count == 2 + expected else { return .needMore }
        let message = Array(buffer[2...])
        buffer.removeAll(keepingCapacity: true)
        do {
            let r = try noise.readMessage(message)
            guard r.payload.isEmpty else {
                done = true
                return .failed(.malformed("handshake message \(number) carried a payload; SPEC §13 requires empty payloads"))
            }
            switch reading {
            case 0:
                initiatorEphemeral = Array(message[0..<32])
                let reply = try noise.writeMessage().message
                reading = 2
                return .send(Self.framed(reply))
            case 1:
                reading = 2
                return .verify(peerStatic: noise.remoteStaticKey ?? [])
            default:
                done = true
                return .established(r.transport!)
            }
        } catch {
            done = true
            return .failed(.noise("handshake message \(number) was refused: \(error.message)"))
        }
    }

    /// `u16be length || message`.
    static func framed(_ m: [UInt8]) -> [UInt8] {
        [UInt8(m.count >> 8), UInt8(m.count & 0xFF)] + m
    }
}

/// One direction's record state: a CipherState whose nonce counts records, with Rekey every
/// `rekeyInterval` records. Seals or opens a batch of records, in parallel when there are
/// several: record i of a batch uses a copy of the state with nonce n + i, and the owner then
/// advances n past the batch, so every nonce is used exactly once. A batch never crosses a
/// Rekey point (`recordsBeforeRekey`).
struct RecordCipher: Sendable {
    private(set) var cipher: CipherState
    let rekeyInterval: UInt64

    init(_ cipher: CipherState, rekeyInterval: UInt64) {
        precondition(rekeyInterval > 0)
        self.cipher = cipher
        self.rekeyInterval = rekeyInterval
    }

    /// The nonce of the next record (= records processed so far).
    var nextNonce: UInt64 { cipher.n }

    /// Records that may go into the next batch before a Rekey is due.
    var recordsBeforeRekey: Int {
        Int(clamping: rekeyInterval - cipher.n % rekeyInterval)
    }

    /// Below this many plaintext bytes a batch is processed on the calling thread (thread
    /// hand-off costs more than it saves).
    static let parallelThreshold = 96 << 10

    /// Seals `records.count` records: record i's plaintext is `records[i]`; its body
    /// (ciphertext and tag) goes to `outputs[i]`.
    /// - Throws: `NoiseError` (`.nonceExhausted`); then nothing of the batch counts.
    mutating func seal(_ records: [UnsafeRawBufferPointer], into outputs: [UnsafeMutableRawPointer],
                       parallel: Bool = true) throws(NoiseError) {
        precondition(records.count == outputs.count && records.count <= recordsBeforeRekey)
        let base = cipher.n
        let total = records.reduce(0) { $0 + $1.count }
        if records.count >= 2 && parallel && total >= Self.parallelThreshold {
            let failure = FirstFailure()
            let c = cipher
            let batch = Batch(records: records, outputs: outputs)
            DispatchQueue.concurrentPerform(iterations: records.count) { i in
                var mine = c
                mine.setNonce(base + UInt64(i))
                do throws(NoiseError) { try mine.encrypt(batch.records[i], into: batch.outputs[i]) } catch {
                    failure.record(i, error)
                }
            }
            if let f = failure.first { throw f.error }
            cipher.setNonce(base + UInt64(records.count))
        } else {
            for i in records.indices { try cipher.encrypt(records[i], into: outputs[i]) }
        }
        try rekeyIfDue()
    }

    /// Opens `records.count` records into `outputs` (each `records[i].count - 16` bytes).
    /// - Returns: nil when all authenticated; else the index of the first record that did
    ///   not (then nothing of this batch counts and the state is unchanged: the connection
    ///   must close).
    mutating func open(_ records: [UnsafeRawBufferPointer], into outputs: [UnsafeMutableRawPointer],
                       parallel: Bool = true) -> (index: Int, error: NoiseError)? {
        precondition(records.count == outputs.count && records.count <= recordsBeforeRekey)
        let base = cipher.n
        let total = records.reduce(0) { $0 + $1.count }
        if records.count >= 2 && parallel && total >= Self.parallelThreshold {
            let failure = FirstFailure()
            let c = cipher
            let batch = Batch(records: records, outputs: outputs)
            DispatchQueue.concurrentPerform(iterations: records.count) { i in
                var mine = c
                mine.setNonce(base + UInt64(i))
                do throws(NoiseError) { try mine.decrypt(batch.records[i], into: batch.outputs[i]) } catch {
                    failure.record(i, error)
                }
            }
            if let f = failure.first { return f }
            cipher.setNonce(base + UInt64(records.count))
        } else {
            for i in records.indices {
                do throws(NoiseError) { try cipher.decrypt(records[i], into: outputs[i]) } catch {
                    cipher.setNonce(base)
                    return (i, error)
                }
            }
        }
        do throws(NoiseError) { try rekeyIfDue() } catch { return (records.count - 1, error) }
        return nil
    }

    /// Rekey after the record with nonce n where (n + 1) % rekeyInterval == 0.
    private mutating func rekeyIfDue() throws(NoiseError) {
        if cipher.n > 0 && cipher.n % rekeyInterval == 0 { try cipher.rekey() }
    }
}

/// The failure with the lowest record index among parallel workers.
private final class FirstFailure: Sendable {
    private let state = Mutex<(index: Int, error: NoiseError)?>(nil)
    func record(_ index: Int, _ error: NoiseError) {
        state.withLock { f in if f == nil || f!.index > index { f = (index, error) } }
    }
    var first: (index: Int, error: NoiseError)? { state.withLock { $0 } }
}

/// The memory of one batch, handed to the parallel workers. `@unchecked Sendable`: iteration
/// i reads only `records[i]` and writes only `outputs[i]` (disjoint regions), and the caller
/// keeps all of it alive and untouched until `concurrentPerform` returns.
private struct Batch: @unchecked Sendable {
    let records: [UnsafeRawBufferPointer]
    let outputs: [UnsafeMutableRawPointer]
}
