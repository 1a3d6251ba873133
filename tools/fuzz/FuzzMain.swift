// libFuzzer entry for the wire decoders (tools/fuzz/run.sh builds it with
// `swiftc -sanitize=fuzzer,address`). The checks live in Tests/GossipWireTests/DecodeOracle.swift
// so that every crash the fuzzer finds can be replayed by a unit test; a broken promise
// (round trip, offsets) is turned into a crash here so that libFuzzer saves the input.

/// Once, before the first input: chunks of one message are compressed on this thread alone.
/// With the default width, `ParallelChunks` hands them to `DispatchQueue.concurrentPerform`,
/// whose continuations libdispatch keeps in a per-thread cache instead of freeing them, so
/// every input that re-frames a multi-chunk body ends with more mallocs than frees. libFuzzer
/// takes that for a possible leak and runs a full LeakSanitizer scan of the heap after it
/// (two thirds of the body target's time, 2,840 exec/s instead of ~12,000). The decoders and
/// the bytes they produce are the same at any width; leak detection stays on.
@_cdecl("LLVMFuzzerInitialize")
public func fuzzInitialize(_ argc: UnsafeMutablePointer<CInt>?, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>?) -> CInt {
    ParallelChunks.width = 1
    return 0
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? []
    let violations = DecodeOracle.fuzzOne(bytes)
    if !violations.isEmpty {
        fatalError("decoder promise broken: " + violations.joined(separator: "; "))
    }
    return 0
}
