// ModelPull / ModelPush (SPEC §5.12): round trips and refusals of malformed payloads.
import Testing
@testable import GossipWire

@Suite struct ExternalMessageTests {
    @Test func pullRoundTrips() throws {
        for path in ["", "/tmp/m.safetensors"] {
            let p = try ModelPullRequest(path: path).encode()
            #expect(try ModelPullRequest.decode(p) == ModelPullRequest(path: path))
        }
        let file = ModelPullReply(version: 42, body: .file(byteCount: 1234))
        #expect(try ModelPullReply.decode(try file.encode()) == file)
        let inline = ModelPullReply(version: 7, body: .inline(Fixtures.model()))
        let decoded = try ModelPullReply.decode(try inline.encode())
        #expect(decoded.version == 7)
        guard case .inline(let m) = decoded.body else { Issue.record("not inline"); return }
        #expect(m.table == Fixtures.table && m.data.array == Fixtures.model().data.array)
    }

    @Test func pushRoundTrips() throws {
        let inline = ModelPushRequest(baseVersion: 9, samples: 1280, steps: 10, path: "", model: Fixtures.model())
        let d = try ModelPushRequest.decode(try inline.encode())
        #expect(d.baseVersion == 9 && d.samples == 1280 && d.steps == 10 && d.path.isEmpty && d.model?.data.array == Fixtures.model().data.array)
        let byPath = ModelPushRequest(baseVersion: 9, samples: 1, steps: 0, path: "/x", model: nil)
        #expect(try ModelPushRequest.decode(try byPath.encode()) == byPath)
        let reply = ModelPushReply(version: 10, relativeL2Change: 0.5)
        #expect(try ModelPushReply.decode(try reply.encode()) == reply)
    }

    @Test func malformedPayloadsAreRefused() throws {
        // A push with both a path and a model, or neither, cannot be encoded.
        #expect(throws: WireError.self) { try ModelPushRequest(baseVersion: 1, samples: 1, steps: 1, path: "/x", model: Fixtures.model()).encode() }
        #expect(throws: WireError.self) { try ModelPushRequest(baseVersion: 1, samples: 1, steps: 1, path: "", model: nil).encode() }
        // A path push with trailing bytes; an unknown pull-reply form; a truncated reply.
        var bytes = try ModelPushRequest(baseVersion: 1, samples: 1, steps: 1, path: "/x", model: nil).encode().array
        bytes.append(0)
        #expect(throws: WireError.self) { try ModelPushRequest.decode(ByteSlice(ByteStorage(copying: bytes))) }
        var form = try ModelPullReply(version: 1, body: .file(byteCount: 1)).encode().array
        form[8] = 2
        #expect(throws: WireError.self) { try ModelPullReply.decode(ByteSlice(ByteStorage(copying: form))) }
        #expect(throws: WireError.self) { try ModelPullReply.decode(ByteSlice(ByteStorage(copying: Array(form.prefix(12))))) }
        // A NaN change in a push reply is malformed (SPEC §5: f64 fields are finite).
        #expect(throws: WireError.self) { try ModelPushReply(version: 1, relativeL2Change: .nan).encode() }
        // A path longer than maxTextBytes is refused before it is read.
        var limits = Limits.default
        limits.maxTextBytes = 4
        #expect(throws: WireError.self) { try ModelPullRequest.decode(try ModelPullRequest(path: "/long/path").encode(), limits: limits) }
    }

    @Test func modelMessagesAreBoundedAsModels() {
        #expect(Limits.carriesModel(.modelPull, .response) && Limits.carriesModel(.modelPush, .request))
        #expect(!Limits.carriesModel(.modelPull, .request) && !Limits.carriesModel(.modelPush, .response))
        #expect(MessageType(name: "ModelPull") == .modelPull && MessageType.modelPush.rawValue == 16)
    }
}
