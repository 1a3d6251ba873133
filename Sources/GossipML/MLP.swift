// The MLP: architecture, deterministic init, forward/backward over preallocated workspaces.
//
// Layer l maps sizes[l] -> sizes[l+1] with weight `layers.{l}.weight` [out, in] and bias
// `layers.{l}.bias` [out]; ReLU between layers, softmax cross-entropy on the last.

import Foundation

/// Layer sizes of a fully connected ReLU network, input first, classes last.
public struct MLPArchitecture: Sendable, Equatable, Hashable, CustomStringConvertible {
    /// Sizes, e.g. `[784, 256, 128, 10]`; empty for an external model.
    public let layerSizes: [Int]
    /// The tensor table of an external model (`--trainer external`, SPEC §6.4 "external"):
    /// any float32 tensors, trained by another program; nil for an MLP.
    public let externalTable: [ExternalTensor]?

    /// Creates an architecture.
    ///
    /// - Throws: `MLError.invalidArchitecture` for fewer than two sizes or a size <= 0.
    public init(layerSizes: [Int]) throws {
        guard layerSizes.count >= 2 else {
            throw MLError(.invalidArchitecture,
                          "an MLP needs at least an input and an output size, got \(layerSizes); give e.g. 784,256,128,10")
        }
        for (i, s) in layerSizes.enumerated() where s <= 0 || s > 1 << 24 {
            throw MLError(.invalidArchitecture,
                          "layer size #\(i) is \(s); every size must be between 1 and 16777216")
        }
        self.layerSizes = layerSizes
        self.externalTable = nil
    }

    /// Parses a comma-separated list such as `"784,256,128,10"`.
    ///
    /// - Throws: `MLError.invalidArchitecture` when a field is not a positive integer.
    public init(parsing text: String) throws {
        var sizes: [Int] = []
        for field in text.split(separator: ",", omittingEmptySubsequences: false) {
            let t = field.trimmingCharacters(in: .whitespaces)
            guard let v = Int(t) else {
                throw MLError(.invalidArchitecture,
                              "'\(text)' is not a list of layer sizes ('\(t)' is not an integer); write e.g. 784,256,128,10")
            }
            sizes.append(v)
        }
        try self.init(layerSizes: sizes)
    }

    /// Comma-separated sizes, e.g. `784,256,128,10`; `external` for an external model.
    public var description: String {
        isExternal ? MLPArchitecture.externalName : layerSizes.map(String.init).joined(separator: ",")
    }

    /// Number of weight layers (0 for an external model).
    public var layerCount: Int { max(0, layerSizes.count - 1) }
    /// Input feature count (0 for an external model: no Swift trainer can train it).
    public var inputSize: Int { layerSizes.first ?? 0 }
    /// Number of classes (output size; 0 for an external model).
    public var outputSize: Int { layerSizes.last ?? 0 }

    /// Tensor layout: `layers.{i}.weight` [out, in], `layers.{i}.bias` [out], in layer order;
    /// an external model's own table.
    public var parameterSpecs: [(name: String, shape: [Int])] {
        if let t = externalTable { return t.map { ($0.name, $0.shape) } }
        var out: [(name: String, shape: [Int])] = []
        for l in 0..<layerCount {
            out.append(("layers.\(l).weight", [layerSizes[l + 1], layerSizes[l]]))
            out.append(("layers.\(l).bias", [layerSizes[l + 1]]))
        }
        return out
    }

    /// Deterministic Kaiming-uniform initialisation from `seed`.
    ///
    /// Weights of layer l ~ U(-sqrt(6/in), sqrt(6/in)) (He, gain sqrt 2 for ReLU); biases
    /// ~ U(-1/sqrt(in), 1/sqrt(in)) (PyTorch's default). One xoshiro256** stream seeded by
    /// `seed` fills tensors in storage order with `(2u - 1) * bound`, u from 24 random bits,
    /// so the bytes are identical on every machine.
    public func makeParameters(seed: UInt64) -> ParameterSet {
        var p = ParameterSet(specs: parameterSpecs)
        if isExternal { return p }   // an external model's weights come from its file
        var rng = SeededGenerator(seed: seed)
        p.storage.withUnsafeMutableBufferPointer { buf in
            for l in 0..<layerCount {
                let fanIn = layerSizes[l]
                let wBound = Float((6.0 / Double(fanIn)).squareRoot())
                let bBound = Float((1.0 / Double(fanIn)).squareRoot())
                let w = p.specs[2 * l], b = p.specs[2 * l + 1]
                for i in w.range { buf[i] = (2 * rng.nextFloat() - 1) * wBound }
                for i in b.range { buf[i] = (2 * rng.nextFloat() - 1) * bBound }
            }
        }
        return p
    }

    /// Whether `p` has exactly this architecture's layout.
    public func matches(_ p: ParameterSet) -> Bool {
        let s = parameterSpecs
        guard p.specs.count == s.count else { return false }
        for (a, b) in zip(p.specs, s) where a.name != b.name || a.shape != b.shape { return false }
        return true
    }

    func requireMatch(_ p: ParameterSet) throws {
        guard matches(p) else {
            throw MLError(.schemaMismatch,
                          "parameters (\(p.specs.map { "\($0.name)\($0.shape)" }.joined(separator: " "))) do not fit architecture \(self); load weights made for this architecture")
        }
    }
}

/// One tensor of an external model's table: a name and a shape (float32).
public struct ExternalTensor: Sendable, Equatable, Hashable {
    public let name: String
    public let shape: [Int]
    public init(name: String, shape: [Int]) { self.name = name; self.shape = shape }
}

extension MLPArchitecture {
    /// The architecture string of an external model (SPEC §6.4): the tensor table is the schema.
    public static let externalName = "external"

    /// An external model: any table of float32 tensors (`gossipd bootstrap --model FILE`),
    /// averaged by the network and trained by another program.
    /// - Throws: `MLError.invalidArchitecture` for an empty table or duplicate names.
    public init(external table: [(name: String, shape: [Int])]) throws {
        guard !table.isEmpty else {
            throw MLError(.invalidArchitecture, "an external model needs at least one tensor; give a safetensors file with float32 tensors")
        }
        guard Set(table.map(\.name)).count == table.count else {
            throw MLError(.invalidArchitecture, "an external model's tensor names must be unique")
        }
        self.layerSizes = []
        self.externalTable = table.map { ExternalTensor(name: $0.name, shape: $0.shape) }
    }

    /// True for an external model (no Swift trainer; `--trainer external` peers only).
    public var isExternal: Bool { externalTable != nil }
}

/// Preallocated activations, deltas and GEMM scratch for one batch capacity.
///
/// Not thread-safe. All buffers are raw allocations owned by this object.
final class MLPWorkspace {
    let arch: MLPArchitecture
    let capacity: Int
    /// acts[0]: input [cap, in]; acts[l+1]: output of layer l [cap, sizes[l+1]] (post-ReLU; logits/probs last).
    let acts: [UnsafeMutablePointer<Float>]
    /// deltas[l]: dLoss/d(pre-activation of layer l) [cap, sizes[l+1]].
    let deltas: [UnsafeMutablePointer<Float>]
    let labels: UnsafeMutablePointer<Int32>
    let scratch: GemmScratch
    let weightOffsets: [Int]
    let biasOffsets: [Int]

    init(arch: MLPArchitecture, capacity: Int) {
        self.arch = arch
        self.capacity = capacity
        let sizes = arch.layerSizes
        acts = sizes.map { UnsafeMutablePointer<Float>.allocate(capacity: capacity * $0) }
        deltas = sizes.dropFirst().map { UnsafeMutablePointer<Float>.allocate(capacity: capacity * $0) }
        labels = .allocate(capacity: capacity)
        var maxA = 0, maxB = 0
        for l in 0..<arch.layerCount {
            let i = sizes[l], o = sizes[l + 1]
            for r in [GemmScratch.requirement(m: capacity, n: o, k: i),
                      GemmScratch.requirement(m: o, n: i, k: capacity),
                      GemmScratch.requirement(m: capacity, n: i, k: o)] {
                maxA = max(maxA, r.a); maxB = max(maxB, r.b)
            }
        }
        scratch = GemmScratch(capacityA: maxA, capacityB: maxB)
        var wo: [Int] = [], bo: [Int] = []
        var off = 0
        for l in 0..<arch.layerCount {
            wo.append(off); off += sizes[l] * sizes[l + 1]
            bo.append(off); off += sizes[l + 1]
        }
        weightOffsets = wo
        biasOffsets = bo
    }

    deinit {
        acts.forEach { $0.deallocate() }
        deltas.forEach { $0.deallocate() }
        labels.deallocate()
    }

    /// Forward pass for the first `n` rows of acts[0]; leaves logits in acts.last.
    func forward(_ params: UnsafePointer<Float>, n: Int) {
        let sizes = arch.layerSizes
        let L = arch.layerCount
        for l in 0..<L {
            let inS = sizes[l], outS = sizes[l + 1]
            let w = params + weightOffsets[l]
            let b = params + biasOffsets[l]
            let y = acts[l + 1]
            Kernels.gemm(m: n, n: outS, k: inS, a: acts[l], ars: inS, acs: 1,
                         b: w, brs: 1, bcs: inS, c: y, scratch: scratch)
            let relu = l < L - 1
            for r in 0..<n {
                let row = y + r * outS
                if relu {
                    for j in 0..<outS { row[j] = max(row[j] + b[j], 0) }
                } else {
                    for j in 0..<outS { row[j] += b[j] }
                }
            }
        }
    }

    /// Softmax cross-entropy over logits in acts.last for `n` rows with labels in `labels`.
    ///
    /// Returns the summed loss and the number of correct argmax predictions. When
    /// `writeDelta` is set, stores (softmax - onehot) * deltaScale into deltas.last.
    func lossAndDelta(n: Int, writeDelta: Bool, deltaScale: Float) -> (lossSum: Double, correct: Int) {
        let k = arch.outputSize
        let logits = acts[arch.layerCount]
        let d = deltas[arch.layerCount - 1]
        var lossSum = 0.0
        var correct = 0
        for r in 0..<n {
            let z = logits + r * k
            var mx = z[0]
            var arg = 0
            for j in 1..<max(k, 1) where z[j] > mx { mx = z[j]; arg = j }
            var s: Float = 0
            for j in 0..<k { s += expf(z[j] - mx) }
            let label = Int(labels[r])
            let lse = mx + logf(s)
            lossSum += Double(lse - z[label])
            if arg == label { correct += 1 }
            if writeDelta {
                let dr = d + r * k
                let inv = 1 / s
                for j in 0..<k { dr[j] = expf(z[j] - mx) * inv * deltaScale }
                dr[label] -= deltaScale
            }
        }
        return (lossSum, correct)
    }

    /// Backward pass for `n` rows after `forward` and `lossAndDelta(writeDelta: true)`.
    /// Overwrites `grads` (same layout as the parameters).
    func backward(_ params: UnsafePointer<Float>, grads: UnsafeMutablePointer<Float>, n: Int) {
        let sizes = arch.layerSizes
        var l = arch.layerCount - 1
        while l >= 0 {
            let inS = sizes[l], outS = sizes[l + 1]
            let dz = deltas[l]
            // dW = dZᵀ · H_l
            Kernels.gemm(m: outS, n: inS, k: n, a: dz, ars: 1, acs: outS,
                         b: acts[l], brs: inS, bcs: 1, c: grads + weightOffsets[l], scratch: scratch)
            // db = column sums of dZ
            let db = grads + biasOffsets[l]
            db.initialize(repeating: 0, count: outS)
            for r in 0..<n {
                let row = dz + r * outS
                for j in 0..<outS { db[j] += row[j] }
            }
            if l > 0 {
                let dPrev = deltas[l - 1]
                Kernels.gemm(m: n, n: inS, k: outS, a: dz, ars: outS, acs: 1,
                             b: params + weightOffsets[l], brs: inS, bcs: 1, c: dPrev, scratch: scratch)
                let h = acts[l]
                let count = n * inS
                for i in 0..<count { dPrev[i] = h[i] > 0 ? dPrev[i] : 0 }
            }
            l -= 1
        }
    }

    /// Copies rows `indices` of `data` into acts[0] / labels (n = indices.count <= capacity).
    func load(_ data: Dataset, rows indices: UnsafeBufferPointer<Int>) {
        let f = data.featureCount
        data.features.withUnsafeBufferPointer { src in
            guard let s = src.baseAddress else { return }
            for (r, i) in indices.enumerated() {
                (acts[0] + r * f).update(from: s + i * f, count: f)
                labels[r] = Int32(data.labels[i])
            }
        }
    }

    /// Copies contiguous rows start ..< start+n of `data` into acts[0] / labels.
    func load(_ data: Dataset, start: Int, n: Int) {
        let f = data.featureCount
        data.features.withUnsafeBufferPointer { src in
            guard let s = src.baseAddress else { return }
            acts[0].update(from: s + start * f, count: n * f)
        }
        for r in 0..<n { labels[r] = Int32(data.labels[start + r]) }
    }
}

/// Loss and gradient of the mean softmax cross-entropy over the whole `data` (for tests and tools).
///
/// - Throws: `MLError` when parameters or data do not fit the architecture.
public func lossAndGradient(architecture: MLPArchitecture, parameters: ParameterSet,
                            data: Dataset) throws -> (loss: Float, gradient: ParameterSet) {
    try architecture.requireMatch(parameters)
    try data.requireFits(architecture)
    let n = data.count
    var grad = ParameterSet(specs: parameters.layout)
    guard n > 0 else { return (0, grad) }
    let ws = MLPWorkspace(arch: architecture, capacity: n)
    ws.load(data, start: 0, n: n)
    var loss = 0.0
    parameters.storage.withUnsafeBufferPointer { p in
        guard let pp = p.baseAddress else { return }
        ws.forward(pp, n: n)
        loss = ws.lossAndDelta(n: n, writeDelta: true, deltaScale: 1 / Float(n)).lossSum
        grad.storage.withUnsafeMutableBufferPointer { g in
            guard let gp = g.baseAddress else { return }
            ws.backward(pp, grads: gp, n: n)
        }
    }
    return (Float(loss / Double(n)), grad)
}
