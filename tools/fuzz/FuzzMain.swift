// libFuzzer entry for the wire decoders (tools/fuzz/run.sh builds it with
// `swiftc -sanitize=fuzzer,address`). The checks live in Tests/GossipWireTests/DecodeOracle.swift
// so that every crash the fuzzer finds can be replayed by a unit test; a broken promise
// (round trip, offsets) is turned into a crash here so that libFuzzer saves the input.

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? []
    let violations = DecodeOracle.fuzzOne(bytes)
    if !violations.isEmpty {
        fatalError("decoder promise broken: " + violations.joined(separator: "; "))
    }
    return 0
}
