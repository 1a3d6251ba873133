// Mini-batch SGD with momentum and weight decay over a preallocated MLP workspace, with an
// optional cosine learning-rate schedule and input augmentation (Gaussian noise, shifts).

import Foundation

/// Hyperparameters of SGD (PyTorch semantics: g += wd*w; v = mu*v + g; w -= lr*v).
public struct SGDConfig: Sendable, Equatable {
    /// Step size.
    public var learningRate: Float
    /// Momentum coefficient (0 disables momentum).
    public var momentum: Float
    /// L2 weight decay, applied to weights and biases alike.
    public var weightDecay: Float
    /// Rows per mini-batch (capped at the dataset size).
    public var batchSize: Int
    /// Standard deviation of Gaussian noise added to training inputs (data augmentation;
    /// 0 = off). Seeded by the trainer's seed, so runs stay reproducible.
    public var inputNoise: Float
    /// Cosine learning-rate horizon in steps (0 = constant `learningRate`). The trainer's step
    /// counter t (`Trainer.stepsDone`) selects the rate: see `learningRate(atStep:)`.
    public var decaySteps: Int
    /// Floor of the cosine schedule as a fraction of `learningRate` (reached at `decaySteps`
    /// and kept afterwards).
    public var finalLearningRateFraction: Float
    /// Random image translation (data augmentation; 0 = off): each training row, read as a
    /// square image of side sqrt(featureCount), is shifted by dx, dy drawn uniformly from
    /// -maxShift...maxShift, filling vacated pixels with 0 (the background of the x/16 and
    /// x/255 scalings). Seeded by the trainer's seed.
    public var maxShift: Int
    /// Steps taken before this trainer existed (a peer resuming from a checkpoint): the
    /// schedule continues at `stepsDone + scheduleOffset` instead of starting over.
    public var scheduleOffset: Int = 0

    /// Creates a configuration; defaults suit the bundled digits and MNIST.
    public init(learningRate: Float = 0.05, momentum: Float = 0.9, weightDecay: Float = 1e-4, batchSize: Int = 64,
                inputNoise: Float = 0, decaySteps: Int = 0, finalLearningRateFraction: Float = 0, maxShift: Int = 0) {
        self.learningRate = learningRate
        self.momentum = momentum
        self.weightDecay = weightDecay
        self.batchSize = batchSize
        self.inputNoise = inputNoise
        self.decaySteps = decaySteps
        self.finalLearningRateFraction = finalLearningRateFraction
        self.maxShift = maxShift
    }

    /// The learning rate used for step `t` (0-based):
    /// `lr * (f + (1 - f) * (1 + cos(pi * min(t, T) / T)) / 2)` with T = `decaySteps`,
    /// f = `finalLearningRateFraction`; plain `learningRate` when T <= 0.
    public func learningRate(atStep t: Int) -> Float {
        guard decaySteps > 0 else { return learningRate }
        let progress = Double(min(max(t, 0), decaySteps)) / Double(decaySteps)
        let f = Double(finalLearningRateFraction)
        let factor = f + (1 - f) * 0.5 * (1 + cos(Double.pi * progress))
        return Float(Double(learningRate) * factor)
    }
}

/// Trains an MLP on one dataset with mini-batch SGD.
///
/// Not thread-safe: the owner serialises access. Each epoch visits a seeded permutation of
/// the rows in full batches (the remainder of an epoch that does not fill a batch is skipped,
/// then the rows are reshuffled). A training step allocates nothing: activations, deltas,
/// gradients, momentum and GEMM packing buffers are allocated once in `init`.
public final class Trainer {
    /// The model architecture.
    public let architecture: MLPArchitecture
    /// The training data.
    public let data: Dataset
    /// Hyperparameters (may be changed between calls to `train`, except `batchSize`).
    public var config: SGDConfig
    /// Steps (mini-batches) run so far.
    public private(set) var stepsDone: Int = 0
    /// Training rows processed so far.
    public private(set) var samplesSeen: Int = 0
    /// Completed passes over the data.
    public private(set) var epochsDone: Int = 0

    private var params: ParameterSet
    private var grads: [Float]
    private var velocity: [Float]
    private let workspace: MLPWorkspace
    private let batch: Int
    private var order: [Int]
    private var cursor: Int
    private var rng: SeededGenerator
    private var shiftScratch: [Float]
    private let imageSide: Int

    /// Creates a trainer.
    ///
    /// - Throws: `MLError` when the parameters do not fit the architecture, the data does not
    ///   fit it (feature count, label range), the data is empty, the batch size is < 1, or
    ///   `maxShift` is negative or set for data whose feature count is not a square.
    public init(architecture: MLPArchitecture, parameters: ParameterSet, data: Dataset,
                config: SGDConfig, seed: UInt64) throws {
        try architecture.requireMatch(parameters)
        try data.requireFits(architecture)
        guard data.count > 0 else {
            throw MLError(.invalidArgument, "dataset '\(data.name)' has no rows to train on; give this peer a non-empty shard")
        }
        guard config.batchSize >= 1 else {
            throw MLError(.invalidArgument, "batch size is \(config.batchSize); use 1 or more")
        }
        let side = Int(Double(data.featureCount).squareRoot().rounded())
        guard config.maxShift >= 0, config.maxShift == 0 || side * side == data.featureCount else {
            throw MLError(.invalidArgument, "maxShift \(config.maxShift) needs square images and a value >= 0; dataset '\(data.name)' has \(data.featureCount) features; use maxShift 0")
        }
        self.imageSide = side * side == data.featureCount ? side : 0
        self.shiftScratch = [Float](repeating: 0, count: data.featureCount)
        self.architecture = architecture
        self.data = data
        self.config = config
        self.params = parameters
        self.grads = [Float](repeating: 0, count: parameters.parameterCount)
        self.velocity = [Float](repeating: 0, count: parameters.parameterCount)
        self.batch = min(config.batchSize, data.count)
        self.workspace = MLPWorkspace(arch: architecture, capacity: batch)
        self.order = Array(0..<data.count)
        self.rng = SeededGenerator(seed: seed)
        rng.shuffle(&order)
        self.cursor = 0
    }

    /// A holder of a model trained by another program (`gossipd peer --trainer external`):
    /// the weights and the counters, no data and no optimizer. `train(steps:)` must not be
    /// called on it; `recordExternal(steps:samples:)` counts what the other program trained.
    /// - Throws: `MLError.schemaMismatch` when the parameters do not fit the architecture.
    public init(holding parameters: ParameterSet, architecture: MLPArchitecture) throws {
        try architecture.requireMatch(parameters)
        self.imageSide = 0
        self.shiftScratch = []
        self.architecture = architecture
        self.data = Dataset(unchecked: "external", features: [], labels: [], featureCount: 0, classCount: 0)
        self.config = SGDConfig()
        self.params = parameters
        self.grads = []
        self.velocity = []
        self.batch = 0
        self.workspace = MLPWorkspace(arch: try MLPArchitecture(external: [("none", [0])]), capacity: 0)
        self.order = []
        self.rng = SeededGenerator(seed: 0)
        self.cursor = 0
        self.isHolder = true
    }

    /// True for a holder made by `init(holding:architecture:)` (the training happens elsewhere).
    public private(set) var isHolder = false

    /// Counts steps and samples trained by another program (an external trainer's push).
    public func recordExternal(steps: Int, samples: Int) {
        stepsDone += max(0, steps)
        samplesSeen += max(0, samples)
    }

    /// The current weights. Setting replaces them (momentum is kept).
    ///
    /// Precondition: the new value has the same schema (use `setParameters` to get an error).
    public var parameters: ParameterSet {
        get { params }
        set {
            precondition(newValue.specs == params.specs, "Trainer.parameters: schema mismatch")
            params = newValue
        }
    }

    /// Replaces the weights, throwing `MLError.schemaMismatch` on a different schema.
    public func setParameters(_ p: ParameterSet) throws {
        guard p.specs == params.specs else {
            throw MLError(.schemaMismatch, "new parameters have schema hash \(p.schemaHash), the trainer's model has \(params.schemaHash); send weights of the same architecture")
        }
        params = p
    }

    /// In-place access to the weights without copying. The body must keep the schema.
    public func withParameters<R>(_ body: (inout ParameterSet) throws -> R) rethrows -> R {
        let specs = params.specs
        defer { precondition(params.specs == specs, "withParameters: the body changed the schema") }
        return try body(&params)
    }

    /// Everything besides the weights and `config` that decides the next steps: momentum,
    /// the generator, the epoch permutation and cursor, the counters. See `TrainerState`.
    public func exportState() -> TrainerState {
        TrainerState(velocity: velocity, rngState: rng.state, order: order, cursor: cursor, batchSize: batch,
                     stepsDone: stepsDone, samplesSeen: samplesSeen, epochsDone: epochsDone,
                     dataFingerprint: TrainerState.fingerprint(of: data))
    }

    /// Makes this trainer continue exactly where the trainer that exported `state` stopped
    /// (with its weights installed by `setParameters` and the same `config`): the next steps
    /// are bit-identical to that trainer's.
    ///
    /// All checks happen before anything changes: on a throw the trainer is untouched.
    /// - Throws: `MLError.schemaMismatch` when the momentum does not fit the model;
    ///   `MLError.invalidArgument` when the state was made for other data (row count,
    ///   labels fingerprint) or another batch size, the order is not a permutation of the
    ///   rows, the cursor is past the end, or the generator state is invalid.
    public func restoreState(_ state: TrainerState) throws {
        guard state.velocity.count == params.parameterCount else {
            throw MLError(.schemaMismatch, "saved momentum has \(state.velocity.count) floats, the model has \(params.parameterCount); the state belongs to another architecture")
        }
        guard state.batchSize == batch else {
            throw MLError(.invalidArgument, "saved state was trained with batch size \(state.batchSize), this trainer uses \(batch); restart with the same batch size or start fresh")
        }
        guard state.order.count == data.count, state.dataFingerprint == TrainerState.fingerprint(of: data) else {
            throw MLError(.invalidArgument, "saved state was made for other data (\(state.order.count) rows, fingerprint \(String(state.dataFingerprint, radix: 16))); this trainer has '\(data.name)' with \(data.count) rows (fingerprint \(String(TrainerState.fingerprint(of: data), radix: 16))); use the same dataset and shard or start fresh")
        }
        try TrainerState.validatePermutation(state.order)
        guard state.cursor >= 0, state.cursor <= state.order.count else {
            throw MLError(.invalidArgument, "saved data cursor \(state.cursor) is outside 0...\(state.order.count); the state is corrupt")
        }
        guard state.stepsDone >= 0, state.samplesSeen >= 0, state.epochsDone >= 0 else {
            throw MLError(.invalidArgument, "saved counters are negative (steps \(state.stepsDone), samples \(state.samplesSeen), epochs \(state.epochsDone)); the state is corrupt")
        }
        guard state.velocity.withUnsafeBufferPointer({ Kernels.allFinite($0) }) else {
            throw MLError(.invalidArgument, "saved momentum holds NaN or Inf; the state is corrupt")
        }
        let generator = try SeededGenerator(state: state.rngState)
        velocity = state.velocity
        rng = generator
        order = state.order
        cursor = state.cursor
        stepsDone = state.stepsDone
        samplesSeen = state.samplesSeen
        epochsDone = state.epochsDone
    }

    /// Installs a checkpoint's weights and state together (see `restoreState`): afterwards
    /// this trainer continues exactly as the one that wrote the checkpoint would have.
    ///
    /// Everything is checked before anything changes: on a throw the trainer is untouched.
    /// - Throws: `MLError.schemaMismatch` when the weights do not fit this trainer's model;
    ///   `MLError.invalidArgument` for non-finite weights and every `restoreState` refusal.
    public func restore(from checkpoint: TrainerCheckpoint) throws {
        guard checkpoint.parameters.specs == params.specs else {
            throw MLError(.schemaMismatch, "checkpoint weights have schema hash \(checkpoint.parameters.schemaHash), the trainer's model has \(params.schemaHash); the checkpoint belongs to another architecture")
        }
        guard checkpoint.parameters.allFinite else {
            throw MLError(.invalidArgument, "checkpoint weights hold NaN or Inf; move the checkpoint away to start fresh")
        }
        try restoreState(checkpoint.state)
        params = checkpoint.parameters
    }

    /// Runs `steps` mini-batches and returns their mean loss (0 for no steps).
    @discardableResult
    public func train(steps: Int) -> Float {
        guard steps > 0 else { return 0 }
        precondition(!isHolder, "Trainer.train: this trainer only holds an externally trained model")
        var lossSum = 0.0
        let n = batch
        let scale = 1 / Float(n)
        for _ in 0..<steps {
            if cursor + n > order.count {
                rng.shuffle(&order)
                cursor = 0
                epochsDone += 1
            }
            order.withUnsafeBufferPointer { o in
                workspace.load(data, rows: UnsafeBufferPointer(rebasing: o[cursor..<(cursor + n)]))
            }
            cursor += n
            if config.inputNoise > 0 {
                let x = workspace.acts[0]
                let sigma = Double(config.inputNoise)
                for i in 0..<(n * data.featureCount) { x[i] += Float(sigma * rng.nextGaussian()) }
            }
            if config.maxShift > 0 && imageSide > 0 {
                shiftRows(workspace.acts[0], rows: n, maxShift: min(config.maxShift, imageSide - 1))
            }
            let ws = workspace
            let cfg = config
            let lr = config.learningRate(atStep: stepsDone + config.scheduleOffset)
            params.storage.withUnsafeMutableBufferPointer { p in
                grads.withUnsafeMutableBufferPointer { g in
                    velocity.withUnsafeMutableBufferPointer { v in
                        guard let pp = p.baseAddress, let gp = g.baseAddress else { return }
                        ws.forward(pp, n: n)
                        lossSum += ws.lossAndDelta(n: n, writeDelta: true, deltaScale: scale).lossSum
                        ws.backward(pp, grads: gp, n: n)
                        Trainer.sgdUpdate(p, g, v, cfg, learningRate: lr)
                    }
                }
            }
            stepsDone += 1
            samplesSeen += n
        }
        return Float(lossSum / Double(steps * n))
    }

    /// Runs whole epochs' worth of steps (count/batch per epoch); returns the mean loss.
    @discardableResult
    public func train(epochs: Int) -> Float {
        train(steps: epochs * max(1, data.count / batch))
    }

    /// Shifts each of `rows` square images at `x` by a random (dx, dy), zero fill.
    private func shiftRows(_ x: UnsafeMutablePointer<Float>, rows: Int, maxShift s: Int) {
        let side = imageSide, f = data.featureCount
        shiftScratch.withUnsafeMutableBufferPointer { tmp in
            guard let t = tmp.baseAddress else { return }
            for r in 0..<rows {
                let dx = rng.nextInt(below: 2 * s + 1) - s
                let dy = rng.nextInt(below: 2 * s + 1) - s
                if dx == 0 && dy == 0 { continue }
                let row = x + r * f
                t.update(from: row, count: f)
                Trainer.shiftImage(UnsafePointer(t), into: row, side: side, dx: dx, dy: dy)
            }
        }
    }

    /// dst[y][x] = src[y - dy][x - dx] (content moves right by dx, down by dy), 0 outside.
    /// Both are row-major side x side images; they must not overlap.
    static func shiftImage(_ src: UnsafePointer<Float>, into dst: UnsafeMutablePointer<Float>, side: Int, dx: Int, dy: Int) {
        for yy in 0..<side {
            let sy = yy - dy
            for xx in 0..<side {
                let sx = xx - dx
                dst[yy * side + xx] = (sy >= 0 && sy < side && sx >= 0 && sx < side) ? src[sy * side + sx] : 0
            }
        }
    }

    /// w -= lr * v, v = mu*v + (g + wd*w); elementwise, vectorised by the optimizer.
    static func sgdUpdate(_ w: UnsafeMutableBufferPointer<Float>, _ g: UnsafeMutableBufferPointer<Float>,
                          _ v: UnsafeMutableBufferPointer<Float>, _ cfg: SGDConfig, learningRate lr: Float) {
        let mu = cfg.momentum, wd = cfg.weightDecay
        guard let wp = w.baseAddress, let gp = g.baseAddress, let vp = v.baseAddress else { return }
        let n = w.count
        for i in 0..<n {
            let gi = gp[i] + wd * wp[i]
            let vi = mu * vp[i] + gi
            vp[i] = vi
            wp[i] -= lr * vi
        }
    }
}
