// Every vector of Vectors/noise_vectors.json (a copy of ../shared/vectors/noise, see
// Vectors/PROVENANCE.md) byte for byte: each handshake message, each transport message after
// Split in both directions, and the handshake hash where the vector has one.
import Crypto
import Foundation
import Testing
@testable import GossipSecure

struct NoiseVector: Decodable, Sendable, CustomTestStringConvertible {
    struct Message: Decodable, Sendable {
        let payload: String
        let ciphertext: String
    }
    let protocol_name: String
    let init_prologue: String
    let init_psks: [String]?
    let init_static: String?
    let init_ephemeral: String
    let init_remote_static: String?
    let resp_prologue: String
    let resp_psks: [String]?
    let resp_static: String?
    let resp_ephemeral: String
    let resp_remote_static: String?
    let handshake_hash: String?
    let messages: [Message]
    let _source: String

    var testDescription: String { "\(protocol_name) (\(_source))" }
}

enum NoiseVectors {
    static var directory: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Vectors")
    }
    static var fileURL: URL { directory.appendingPathComponent("noise_vectors.json") }

    static let all: [NoiseVector] = {
        struct File: Decodable { let vectors: [NoiseVector] }
        let data = try! Data(contentsOf: fileURL)
        return try! JSONDecoder().decode(File.self, from: data).vectors
    }()
}

func hex(_ s: String) -> [UInt8] {
    Hex.decode(Substring(s), count: s.utf8.count / 2)!
}

func privateKey(_ s: String?) throws -> Curve25519.KeyAgreement.PrivateKey? {
    try s.map { try Curve25519.KeyAgreement.PrivateKey(rawRepresentation: hex($0)) }
}

func publicKey(_ s: String?) throws -> Curve25519.KeyAgreement.PublicKey? {
    try s.map { try Curve25519.KeyAgreement.PublicKey(rawRepresentation: hex($0)) }
}

@Suite struct NoiseVectorTests {
    @Test func vectorFileIsTheSharedOneUnchanged() throws {
        let data = try Data(contentsOf: NoiseVectors.fileURL)
        #expect(Hex.encode(SHA256.hash(data: data)) == "a15ec076977c3757ebd4cacb847bf57adecab793f79ea688bd7c5d418c80fd68",
                "Vectors/noise_vectors.json differs from the checksum in PROVENANCE.md")
        // When ../shared is laid beside the repository (as for the datasets), the copy must match it.
        let shared = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("shared/vectors/noise/noise_vectors.json")
        if let sharedData = try? Data(contentsOf: shared) {
            #expect(sharedData == data, "Tests/GossipSecureTests/Vectors/noise_vectors.json differs from \(shared.path): copy it again")
        }
    }

    @Test func everyListedProtocolHasVectors() throws {
        let names = Set(NoiseVectors.all.map(\.protocol_name))
        #expect(NoiseVectors.all.count == 14)
        for p in ["XXpsk3", "XX", "NNpsk0", "IKpsk2"] {
            for c in ["AESGCM", "ChaChaPoly"] {
                #expect(names.contains("Noise_\(p)_25519_\(c)_SHA256"))
            }
        }
        #expect(names.contains("Noise_IK_25519_ChaChaPoly_SHA256"))
        #expect(names.contains("Noise_NN_25519_ChaChaPoly_SHA256"))
    }

    @Test(arguments: NoiseVectors.all)
    func vector(_ v: NoiseVector) throws {
        let proto = try NoiseProtocol(name: v.protocol_name)
        var initiator = try HandshakeState(
            protocol: proto, role: .initiator, prologue: hex(v.init_prologue),
            s: privateKey(v.init_static), e: privateKey(v.init_ephemeral),
            rs: publicKey(v.init_remote_static), psks: (v.init_psks ?? []).map { SymmetricKey(data: hex($0)) })
        var responder = try HandshakeState(
            protocol: proto, role: .responder, prologue: hex(v.resp_prologue),
            s: privateKey(v.resp_static), e: privateKey(v.resp_ephemeral),
            rs: publicKey(v.resp_remote_static), psks: (v.resp_psks ?? []).map { SymmetricKey(data: hex($0)) })

        var initiatorTransport: NoiseTransport?
        var responderTransport: NoiseTransport?
        var handshakeMessages = 0
        for (i, m) in v.messages.enumerated() {
            let fromInitiator = i % 2 == 0
            let payload = hex(m.payload)
            let expected = hex(m.ciphertext)
            if initiatorTransport == nil || responderTransport == nil {
                #expect(initiatorTransport == nil && responderTransport == nil, "both sides finish the handshake on the same message")
                #expect(initiator.nextStep == (fromInitiator ? .write : .read))
                #expect(responder.nextStep == (fromInitiator ? .read : .write))
                handshakeMessages += 1
                #expect(proto.pattern.messageLength(i, payloadLength: payload.count) == expected.count, "messageLength(\(i))")
                if fromInitiator {
                    let w = try initiator.writeMessage(payload: payload)
                    #expect(w.message == expected, "handshake message \(i) (initiator) differs")
                    let r = try responder.readMessage(w.message)
                    #expect(r.payload == payload)
                    initiatorTransport = w.transport
                    responderTransport = r.transport
                } else {
                    let w = try responder.writeMessage(payload: payload)
                    #expect(w.message == expected, "handshake message \(i) (responder) differs")
                    let r = try initiator.readMessage(w.message)
                    #expect(r.payload == payload)
                    responderTransport = w.transport
                    initiatorTransport = r.transport
                }
            } else {
                if fromInitiator {
                    let c = try initiatorTransport!.encrypt(payload)
                    #expect(c == expected, "transport message \(i) (initiator to responder) differs")
                    #expect(try responderTransport!.decrypt(c) == payload)
                } else {
                    let c = try responderTransport!.encrypt(payload)
                    #expect(c == expected, "transport message \(i) (responder to initiator) differs")
                    #expect(try initiatorTransport!.decrypt(c) == payload)
                }
            }
        }
        #expect(handshakeMessages == proto.pattern.messages.count)
        #expect(v.messages.count > handshakeMessages, "the vector has transport messages")
        let it = try #require(initiatorTransport)
        let rt = try #require(responderTransport)
        #expect(initiator.nextStep == .complete && responder.nextStep == .complete)
        #expect(it.handshakeHash == rt.handshakeHash)
        if let h = v.handshake_hash {
            #expect(it.handshakeHash == hex(h), "handshake hash differs")
        }
        // Static keys that travelled (or were pre-shared) are the ones each side holds.
        if let s = v.resp_static {
            #expect(it.remoteStaticKey == Array(try privateKey(s)!.publicKey.rawRepresentation))
        }
        let initiatorSendsStatic = proto.pattern.messages.enumerated().contains { $0.offset % 2 == 0 && $0.element.contains(.s) }
        if initiatorSendsStatic, let s = v.init_static {
            #expect(rt.remoteStaticKey == Array(try privateKey(s)!.publicKey.rawRepresentation))
        }
    }
}
