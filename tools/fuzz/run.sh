#!/usr/bin/env bash
# Builds the libFuzzer target for the wire decoders and runs it for a fixed number of
# executions. Usage: tools/fuzz/run.sh [RUNS_PER_TARGET] (default 500000, two targets:
# the frame stream decoder and the message body decoders, so 1,000,000 runs in total).
# The seed corpus is Protocol/vectors/*.hex converted to binary (as frame streams, and their
# payloads as bodies) plus Tests/GossipWireTests/KnownBad/*.bin. A crash or a broken
# round-trip promise stops the run, leaves the input in $FUZZ_WORK/crash-*, and exits 1;
# copy that file into Tests/GossipWireTests/KnownBad/NAME.bin so that a unit test replays it.
# FUZZ_OPT=-Onone builds without optimisation, so that `assert`s are checked too (slower).
# FUZZ_WORK=DIR keeps the binary, corpora and logs in DIR (else a temporary directory, removed
# after a clean run).
# Needs: swiftc with -sanitize=fuzzer (Linux toolchains), zlib headers (zlib1g-dev).
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${1:-500000}
if [ -n "${FUZZ_WORK:-}" ]; then
    WORK=$FUZZ_WORK
else
    WORK=$(mktemp -d)
    trap 'st=$?; [ $st -eq 0 ] && rm -rf "$WORK"; exit $st' EXIT   # kept on failure
fi
BIN="$WORK/gossip-fuzz"
mkdir -p "$WORK"

start=$(date +%s)
echo "fuzz: building $BIN"
# GossipWire compiled into one module with the oracle and the entry point: the oracle uses
# public API only, so one module needs no -enable-testing.
sed 's/^import GossipWire$//' Tests/GossipWireTests/DecodeOracle.swift > "$WORK/DecodeOracle.swift"
# GossipWire imports CGossipKernels (hardware CRC-32, dtype conversions): its C files become
# objects linked in, and a module map like the one SwiftPM generates makes it importable.
mkdir -p "$WORK/CGossipKernels"
printf 'module CGossipKernels {\n    umbrella header "%s/Sources/CGossipKernels/include/CGossipKernels.h"\n    export *\n}\n' "$PWD" \
    > "$WORK/CGossipKernels/module.modulemap"
kernel_objects=()
for c in Sources/CGossipKernels/*.c; do
    o="$WORK/$(basename "$c" .c).o"
    clang -O2 -fPIC -I Sources/CGossipKernels/include -c "$c" -o "$o" 2>> "$WORK/build.log" || { cat "$WORK/build.log" >&2; exit 2; }
    kernel_objects+=("$o")
done
swiftc -sanitize=fuzzer,address "${FUZZ_OPT:--O}" -parse-as-library -module-name GossipWire \
    -I Sources/CZlib -I "$WORK/CGossipKernels" Sources/GossipWire/*.swift "$WORK/DecodeOracle.swift" tools/fuzz/FuzzMain.swift \
    "${kernel_objects[@]}" -lz -o "$BIN" 2>> "$WORK/build.log" || { cat "$WORK/build.log" >&2; exit 2; }

# Seeds: selector 0 = frame stream (next byte: split point), selector 1 = body under the
# fuzz limits, 2 = body under the default limits (next byte: type and kind; see
# DecodeOracle.fuzzOne). Written by a small Python script.
python3 - "$WORK" <<'PY'
import glob, os, sys, struct
work = sys.argv[1]
types = [1, 2, 3, 4, 5, 6, 7, 0xFFFF, 99]
for target in ("stream", "body"):
    os.makedirs(os.path.join(work, target), exist_ok=True)
for path in sorted(glob.glob("Protocol/vectors/*.hex")):
    name = os.path.basename(path)[:-4]
    hexdigits = "".join(l for l in open(path) if not l.startswith("#")).split()
    data = bytes.fromhex("".join(hexdigits))
    open(os.path.join(work, "stream", name), "wb").write(bytes([0, 128]) + data)
    # Each uncompressed single-frame vector's payload, as a body of its own type and kind.
    length, version, flags, mtype = struct.unpack_from("<IBBH", data, 0)
    if flags & 0x01 or not flags & 0x10 or len(data) != length:
        continue
    kind = 2 if flags & 0x08 else (1 if flags & 0x04 else 0)
    if mtype in types:
        pick = types.index(mtype) + kind * len(types)
        open(os.path.join(work, "body", name), "wb").write(bytes([1, pick]) + data[24:])
        open(os.path.join(work, "body", name + "-default-limits"), "wb").write(bytes([2, pick]) + data[24:])
# Bodies exactly at DecodeOracle.limits (64 peers, 256-byte names, 4 KiB text): one mutation
# from just past them, where an off-by-one in a bound check would show.
def seed(name, pick, payload):
    open(os.path.join(work, "body", "edge-" + name), "wb").write(bytes([1, pick]) + payload)
u16 = lambda v: struct.pack("<H", v); u32 = lambda v: struct.pack("<I", v); u64 = lambda v: struct.pack("<Q", v)
# 64 peer entries (str endpoint + 32-byte identity): 63 unknown (zero), the last one known.
seed("register_reply_64_peers", types.index(1) + len(types), u32(64) + (u16(0) + bytes(32)) * 63 + u16(0) + bytes(range(1, 33)) + u16(3) + b"3,2" + u64(1))
seed("register_request_256_byte_endpoint", types.index(1), u16(256) + b"a" * 256 + u64(1))
seed("status_reply_4096_byte_text", types.index(4) + len(types), u32(4096) + b"x" * 4096)
seed("error_4096_byte_text", types.index(5) + 2 * len(types), u32(10) + u32(4096) + b"x" * 4096)
for path in sorted(glob.glob("Tests/GossipWireTests/KnownBad/*.bin")):
    data = open(path, "rb").read()
    target = "stream" if data and data[0] % 4 == 0 else "body"
    open(os.path.join(work, target, os.path.basename(path)), "wb").write(data)
PY

# A crash is reported by libFuzzer; Swift's own backtracer can take minutes to symbolicate.
export SWIFT_BACKTRACE=enable=no
total=0
for target in stream body; do
    echo "fuzz: $target: $RUNS runs"
    mkdir -p "$WORK/corpus-$target"
    if ! "$BIN" -runs="$RUNS" -max_len=8192 -rss_limit_mb=2048 -seed=1 -print_final_stats=1 \
            -artifact_prefix="$WORK/" "$WORK/corpus-$target" "$WORK/$target" > "$WORK/$target.log" 2>&1; then
        tail -40 "$WORK/$target.log" >&2
        echo "fuzz: FAILED in target $target; the input is in $WORK/crash-* (add it to Tests/GossipWireTests/KnownBad/)" >&2
        exit 1
    fi
    ran=$(sed -n 's/^stat::number_of_executed_units: *//p' "$WORK/$target.log")
    echo "fuzz: $target: $ran runs, no crash ($(sed -n 's/.*DONE *//p' "$WORK/$target.log"))"
    total=$((total + ran))
done
echo "fuzz: $total executions in total, no crash, $(( $(date +%s) - start )) s"
