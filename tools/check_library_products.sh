#!/usr/bin/env bash
# Checks that another package can depend on gossip's library products by version: clones this
# repository's HEAD into a temporary directory, tags the clone (never this repository), and
# builds a throwaway package that depends on it by `file://` URL at that tag and trains a few
# steps through GossipML. A negative control tags a commit whose library targets always carry
# `unsafeFlags` and expects SwiftPM to refuse it, so the check cannot pass vacuously.
# Needs the swift-log and swift-argument-parser checkouts in SwiftPM's cache (or network).
# Usage: tools/check_library_products.sh   (about 3 minutes on 2 cores; exit 0 = both held)
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

git clone -q "$repo" "$work/gossip"
git -C "$work/gossip" checkout -q "$(git -C "$repo" rev-parse HEAD)"
git -C "$work/gossip" -c user.name=check -c user.email=check@localhost tag 9.9.9
git -C "$work/gossip" checkout -q -b negative-control
sed -i 's/^let isDevelopmentCheckout = .*/let isDevelopmentCheckout = true/' "$work/gossip/Package.swift"
git -C "$work/gossip" -c user.name=check -c user.email=check@localhost commit -qam "negative control: unsafeFlags always on"
git -C "$work/gossip" -c user.name=check -c user.email=check@localhost tag 9.9.10

mkdir -p "$work/consumer/Sources/consumer"
cat > "$work/consumer/Sources/consumer/main.swift" <<'SWIFT'
import GossipML
import GossipNode
let arch = try MLPArchitecture(parsing: "64,32,10")
let data = try DatasetSource(parsing: "digits").load().train
let t = try Trainer(architecture: arch, parameters: arch.makeParameters(seed: 1), data: data, config: SGDConfig(), seed: 1)
print("consumer: kernel \(MicroKernel.best), loss after 50 steps \(t.train(steps: 50))")
SWIFT
manifest() {
    cat > "$work/consumer/Package.swift" <<SWIFT
// swift-tools-version: 6.0
import PackageDescription
let package = Package(
    name: "consumer",
    dependencies: [.package(url: "file://$work/gossip", exact: "$1")],
    targets: [.executableTarget(name: "consumer", dependencies: [
        .product(name: "GossipML", package: "gossip"),
        .product(name: "GossipNode", package: "gossip"),
    ])]
)
SWIFT
    rm -rf "$work/consumer/.build" "$work/consumer/Package.resolved"
}

manifest 9.9.10
if (cd "$work/consumer" && swift build 2>&1 | tee "$work/negative.log" | tail -3); then
    echo "check_library_products: FAIL: the negative control (unsafeFlags at a tag) built" >&2; exit 1
fi
grep -q "contains unsafe build flags" "$work/negative.log" || {
    echo "check_library_products: FAIL: the negative control failed for another reason" >&2; exit 1; }
echo "check_library_products: negative control refused as expected (unsafe build flags)"

manifest 9.9.9
(cd "$work/consumer" && swift build 2>&1 | tail -2 && ./.build/debug/consumer)
echo "check_library_products: OK: GossipML and GossipNode build as a versioned dependency"
