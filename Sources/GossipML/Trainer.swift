// Mini-batch SGD with momentum and weight decay over a preallocated MLP workspace.

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

    /// Creates a configuration; defaults suit the bundled digits and MNIST.
    public init(learningRate: Float = 0.05, momentum: Float = 0.9, weightDecay: Float = 1e-4, batchSize: Int = 64,
                inputNoise: Float = 0) {
        self.learningRate = learningRate
        self.momentum = momentum
        self.weightDecay = weightDecay
        self.batchSize = batchSize
        self.inputNoise = inputNoise
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

    /// Creates a trainer.
    ///
    /// - Throws: `MLError` when the parameters do not fit the architecture, the data does not
    ///   fit it (feature count, label range), the data is empty, or the batch size is < 1.
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

    /// Runs `steps` mini-batches and returns their mean loss (0 for no steps).
    @discardableResult
    public func train(steps: Int) -> Float {
        guard steps > 0 else { return 0 }
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
            let ws = workspace
            let cfg = config
            params.storage.withUnsafeMutableBufferPointer { p in
                grads.withUnsafeMutableBufferPointer { g in
                    velocity.withUnsafeMutableBufferPointer { v in
                        guard let pp = p.baseAddress, let gp = g.baseAddress else { return }
                        ws.forward(pp, n: n)
                        lossSum += ws.lossAndDelta(n: n, writeDelta: true, deltaScale: scale).lossSum
                        ws.backward(pp, grads: gp, n: n)
                        Trainer.sgdUpdate(p, g, v, cfg)
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

    /// w -= lr * v, v = mu*v + (g + wd*w); elementwise, vectorised by the optimizer.
    static func sgdUpdate(_ w: UnsafeMutableBufferPointer<Float>, _ g: UnsafeMutableBufferPointer<Float>,
                          _ v: UnsafeMutableBufferPointer<Float>, _ cfg: SGDConfig) {
        let lr = cfg.learningRate, mu = cfg.momentum, wd = cfg.weightDecay
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
