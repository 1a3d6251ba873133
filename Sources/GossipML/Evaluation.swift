// Evaluation: mean loss and accuracy of a model on a dataset (e.g. the held-out split).

/// Result of `evaluate`: mean cross-entropy loss, accuracy in [0, 1], rows evaluated.
public struct Evaluation: Sendable, Equatable, CustomStringConvertible {
    /// Mean softmax cross-entropy.
    public let loss: Float
    /// Fraction of rows whose argmax equals the label.
    public let accuracy: Double
    /// Number of rows evaluated.
    public let count: Int

    public var description: String {
        "loss \(loss) accuracy \(accuracy) (\(count) rows)"
    }
}

/// Mean loss and accuracy of `parameters` on `data`, in chunks of 256 rows.
///
/// Precondition: parameters match the architecture and the data's feature/class counts fit
/// it (use `MLPArchitecture.matches` / `Dataset.fits` to check first); mismatches give an
/// evaluation with NaN loss and zero accuracy instead of crashing.
public func evaluate(architecture: MLPArchitecture, parameters: ParameterSet, on data: Dataset) -> Evaluation {
    guard architecture.matches(parameters), data.fits(architecture) else {
        return Evaluation(loss: .nan, accuracy: 0, count: data.count)
    }
    let n = data.count
    guard n > 0 else { return Evaluation(loss: 0, accuracy: 0, count: 0) }
    let chunk = min(256, n)
    let ws = MLPWorkspace(arch: architecture, capacity: chunk)
    var lossSum = 0.0
    var correct = 0
    parameters.storage.withUnsafeBufferPointer { p in
        guard let pp = p.baseAddress else { return }
        var start = 0
        while start < n {
            let m = min(chunk, n - start)
            ws.load(data, start: start, n: m)
            ws.forward(pp, n: m)
            let r = ws.lossAndDelta(n: m, writeDelta: false, deltaScale: 0)
            lossSum += r.lossSum
            correct += r.correct
            start += m
        }
    }
    return Evaluation(loss: Float(lossSum / Double(n)), accuracy: Double(correct) / Double(n), count: n)
}
