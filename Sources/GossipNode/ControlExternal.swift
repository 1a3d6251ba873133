// gossipctl pull / push (SPEC §5.12, README "External trainers"): an external trainer's two
// operations as library calls. With a path (the default over the control socket) the node
// reads or writes the safetensors file itself, so nothing but the path crosses the socket;
// `inline` copies the model through the socket instead (a node on another host, over TCP).
import Foundation
import GossipML
import GossipNet
import GossipWire

/// What `gossipctl pull` reports.
public struct PullResult: Sendable, Equatable {
    /// The version to name in the push that follows.
    public var version: UInt64
    public var path: String
    /// Size of the written file.
    public var bytes: UInt64
    /// True when the model came through the socket (gossipctl wrote the file).
    public var inline: Bool

    public func json() -> String {
        jsonText(["version": NSNumber(value: version), "path": path, "bytes": NSNumber(value: bytes), "inline": inline])
    }
}

/// What `gossipctl push` reports.
public struct PushResult: Sendable, Equatable {
    /// The node's model version right after the push.
    public var version: UInt64
    /// How far the push moved the node's model (relative L2).
    public var relativeL2Change: Double
    public var inline: Bool

    public func json() -> String {
        jsonText(["version": NSNumber(value: version), "relative_l2_change": relativeL2Change, "inline": inline])
    }
}

extension Control {
    /// An absolute form of `path` (the node resolves nothing against its own directory).
    static func absolute(_ path: String) -> String {
        path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path
    }

    /// Pulls the node's model into the safetensors file `out`.
    /// - Parameter inline: copy the model through the socket and write the file here; the
    ///   default (false) has the node write `out` itself (same host).
    public func pull(to out: String, inline: Bool = false) throws(ControlFailure) -> PullResult {
        let path = Control.absolute(out)
        let request: ByteSlice
        do { request = try ModelPullRequest(path: inline ? "" : path).encode() } catch {
            throw ControlFailure(exitCode: .usage, message: "--out '\(out)': \(error)", status: nil)
        }
        let m = try call(.modelPull, request)
        let reply: ModelPullReply
        do { reply = try ModelPullReply.decode(m.payload, limits: WireCodec.limits) } catch {
            throw ControlFailure(exitCode: .failure, message: "\(target) sent a ModelPull reply this gossipctl cannot read: \(error)", status: nil)
        }
        switch reply.body {
        case .file(let n):
            return PullResult(version: reply.version, path: path, bytes: n, inline: false)
        case .inline(let model):
            let decoded: (MLPArchitecture, ParameterSet)
            do { decoded = try WireCodec.parameters(of: model) } catch {
                throw ControlFailure(exitCode: .failure, message: "\(target) sent a model this gossipctl cannot read: \(error)", status: nil)
            }
            let (arch, params) = decoded
            let meta = ["arch": arch.description, "version": "\(reply.version)", "round": "\(model.round)",
                        "step": "\(model.step)", "samples_seen": "\(model.samples)"]
            do { try SafeTensors.write(params, metadata: meta, to: path) } catch {
                throw ControlFailure(exitCode: .cannotWrite, message: "cannot write \(path): \(error)", status: nil)
            }
            let size = (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? NSNumber)?.uint64Value ?? 0
            return PullResult(version: reply.version, path: path, bytes: size, inline: true)
        }
    }

    /// Pushes the weights in the safetensors file `input`, trained from pull `version` on
    /// `samples` examples in `steps` steps.
    /// - Parameter inline: read the file here and send the weights through the socket; the
    ///   default (false) has the node read `input` itself (same host).
    public func push(from input: String, version: UInt64, samples: UInt64, steps: UInt64 = 0,
                     inline: Bool = false) throws(ControlFailure) -> PushResult {
        let path = Control.absolute(input)
        let request: ByteSlice
        do {
            if inline {
                let p: ParameterSet
                do { p = try SafeTensors.read(path: path).parameters } catch {
                    throw ControlFailure(exitCode: .cannotRead, message: "cannot read \(path): \(error)", status: nil)
                }
                let table = WireCodec.table(p)
                let data = p.storage.withUnsafeBytes { ByteSlice(ByteStorage(copying: $0)) }
                let model = ModelState(architecture: "", round: 0, step: 0, samples: 0, table: table, data: data)
                request = try ModelPushRequest(baseVersion: version, samples: samples, steps: steps, path: "", model: model).encode()
            } else {
                guard FileManager.default.isReadableFile(atPath: path) else {
                    throw ControlFailure(exitCode: .cannotRead, message: "cannot read \(path): no such readable file", status: nil)
                }
                request = try ModelPushRequest(baseVersion: version, samples: samples, steps: steps, path: path, model: nil).encode()
            }
        } catch let f as ControlFailure {
            throw f
        } catch {
            throw ControlFailure(exitCode: .usage, message: "--in '\(input)': \(error)", status: nil)
        }
        let m = try call(.modelPush, request)
        do {
            let r = try ModelPushReply.decode(m.payload, limits: WireCodec.limits)
            return PushResult(version: r.version, relativeL2Change: r.relativeL2Change, inline: inline)
        } catch {
            throw ControlFailure(exitCode: .failure, message: "\(target) sent a ModelPush reply this gossipctl cannot read: \(error)", status: nil)
        }
    }
}
