// Sharding of a training set across n peers: IID (shuffle + contiguous split) or non-IID
// (per-class Dirichlet label skew). Every row lands in exactly one shard; seeded, reproducible.

extension Dataset {
    /// The rows of shard `index` of `n` (see `shardIndices`).
    public func shard(index: Int, of n: Int, seed: UInt64 = 0, nonIIDAlpha: Double? = nil) throws -> Dataset {
        subset(try shardIndices(index: index, of: n, seed: seed, nonIIDAlpha: nonIIDAlpha))
    }

    /// Row indices (ascending) of shard `index` of `n`.
    ///
    /// IID (`nonIIDAlpha == nil`): a seeded permutation of all rows split into n contiguous,
    /// near-equal parts. Non-IID: for each class, its rows in seeded order are split among the
    /// n shards by proportions drawn from Dirichlet(alpha) (smaller alpha = more skew). In
    /// both cases the n shards partition the rows exactly; the result depends only on
    /// (count, labels, n, seed, alpha).
    ///
    /// - Throws: `MLError.invalidArgument` for n < 1, index outside 0..<n, or alpha <= 0.
    public func shardIndices(index: Int, of n: Int, seed: UInt64, nonIIDAlpha: Double?) throws -> [Int] {
        guard n >= 1 else {
            throw MLError(.invalidArgument, "shard count is \(n); use 1 or more peers")
        }
        guard index >= 0 && index < n else {
            throw MLError(.invalidArgument, "shard index \(index) is outside 0..<\(n); give each peer a distinct index below the shard count")
        }
        if let alpha = nonIIDAlpha {
            guard alpha > 0, alpha.isFinite else {
                throw MLError(.invalidArgument, "non-IID alpha is \(alpha); use a positive number (e.g. 0.5; large values approach IID)")
            }
            var rng = SeededGenerator(seed: seed ^ 0x6E6F_6E49_4944)  // "nonIID"
            var byClass = [[Int]](repeating: [], count: max(classCount, Int(labels.max() ?? 0) + 1))
            for (i, l) in labels.enumerated() { byClass[Int(l)].append(i) }
            var mine: [Int] = []
            for var rows in byClass {
                rng.shuffle(&rows)
                let p = rng.nextDirichlet(alpha: alpha, count: n)
                var cum = 0.0
                var lo = 0
                for s in 0..<n {
                    cum += p[s]
                    let hi = s == n - 1 ? rows.count : min(rows.count, Int((cum * Double(rows.count)).rounded()))
                    let h = max(hi, lo)
                    if s == index { mine.append(contentsOf: rows[lo..<h]) }
                    lo = h
                }
            }
            return mine.sorted()
        }
        var order = Array(0..<count)
        var rng = SeededGenerator(seed: seed)
        rng.shuffle(&order)
        let lo = index * count / n, hi = (index + 1) * count / n
        return order[lo..<hi].sorted()
    }
}
