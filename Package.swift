// swift-tools-version: 6.0
// gossip: decentralized peer-to-peer model training over a hand-written binary frame protocol.
import PackageDescription

// Library products and unsafeFlags. SwiftPM refuses a dependency required by version (a
// tagged release) whose products contain `unsafeFlags`, so the library targets get none when
// this package is checked out at a tag, which is how a dependency checkout always is. CPU
// features need no flag at all: GossipML picks its AVX2/FMA GEMM kernel at run time
// (CGossipKernels compiles just that function for AVX2/FMA), so every build runs on any CPU.
//
// One flag remains, for development only: GossipML and CGossipKernels are optimized (-O /
// -O2) in debug builds, because unoptimized their kernels run about 170 times slower and
// `swift test` (debug) trains models end to end. It applies only in a checkout that is not at
// a tag (`Context.gitInformation`), i.e. working on this repository. Tried and rejected:
// clang ignores `__attribute__((optimize))` and `#pragma GCC optimize` (debug C stays -O0);
// Swift's `@_optimize(speed)` does not raise an -Onone build; SwiftPM (6.3.1) refuses
// unsafeFlags guarded by a package trait even when the trait is off; an environment variable
// would make `swift test` no longer the plain command. A dependent package building this one
// in debug gets unoptimized kernels (correct, slower); release builds are fast everywhere.
let isDevelopmentCheckout = Context.gitInformation?.currentTag == nil
let mlSwiftSettings: [SwiftSetting] = isDevelopmentCheckout ? [.unsafeFlags(["-O"], .when(configuration: .debug))] : []
let kernelCSettings: [CSetting] = isDevelopmentCheckout ? [.unsafeFlags(["-O2"], .when(configuration: .debug))] : []

let package = Package(
    name: "gossip",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "GossipWire", targets: ["GossipWire"]),
        .library(name: "GossipNet", targets: ["GossipNet"]),
        .library(name: "GossipML", targets: ["GossipML"]),
        .library(name: "GossipNode", targets: ["GossipNode"]),
        .executable(name: "gossipd", targets: ["gossipd"]),
        .executable(name: "gossipctl", targets: ["gossipctl"]),
        .executable(name: "framedump", targets: ["framedump"]),
        .executable(name: "gossip-bench", targets: ["gossip-bench"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-crypto", from: "4.5.2"),
        // Metrics (issue 12): recorded through swift-metrics, exposed in the Prometheus text
        // format by swift-prometheus. Neither pulls SwiftNIO into the graph (checked with
        // `swift package show-dependencies`); the HTTP endpoint is our own (GossipNet).
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
    ],
    targets: [
        // System zlib (apt: zlib1g-dev). No logic here.
        .systemLibrary(
            name: "CZlib",
            pkgConfig: "zlib",
            providers: [.apt(["zlib1g-dev"]), .brew(["zlib"])]
        ),
        // Frame header, messages, tensor payloads, compression, limits. No I/O.
        .target(name: "GossipWire", dependencies: ["CZlib", "CGossipKernels"]),
        // What only the inspector (framedump) needs: pcap parsing, TCP reassembly, frame
        // formatting. Nodes (GossipNode, gossipd) must not link it.
        .target(name: "GossipInspect", dependencies: ["GossipWire", "GossipSecure", .product(name: "Crypto", package: "swift-crypto")]),
        // POSIX sockets driven by Dispatch (one epoll set on a Dispatch read source on Linux), framed (and Noise-sealed) connections, RPC.
        .target(name: "GossipNet", dependencies: ["GossipWire", "GossipSecure", "CGossipPoll"]),
        // epoll with a flat interface, for GossipNet's Poller (Linux; empty elsewhere). No logic.
        .target(name: "CGossipPoll"),
        // The CPU-feature check, the AVX2/FMA GEMM micro-kernel (C: per-function target) and
        // the hardware CRC-32 (PCLMULQDQ / ARMv8 CRC32) of the frame checksums.
        .target(name: "CGossipKernels", cSettings: kernelCSettings),
        // AES-256-GCM into caller memory on swift-crypto's BoringSSL (see its header). No logic.
        .target(name: "CGossipAEAD"),
        // Noise (revision 34) handshake and cipher states as pure state machines; key files.
        // No networking; the only I/O is reading and writing key files.
        .target(
            name: "GossipSecure",
            dependencies: [.product(name: "Crypto", package: "swift-crypto"), "CGossipAEAD"],
            exclude: ["README.md"]
        ),
        // Tensors, MLP, SGD, datasets, averaging, safetensors. No networking.
        .target(
            name: "GossipML",
            dependencies: ["CZlib", "CGossipKernels"],
            resources: [.copy("Resources/digits.csv.gz")],
            swiftSettings: mlSwiftSettings
        ),
        // Bootstrap and peer roles, membership, gossip loop, status.
        .target(
            name: "GossipNode",
            dependencies: [
                "GossipWire", "GossipNet", "GossipML", "GossipSecure",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]
        ),
        .executableTarget(
            name: "gossipd",
            dependencies: [
                "GossipNode", "GossipSecure",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(
            name: "gossipctl",
            dependencies: [
                "GossipNode", "GossipSecure",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "tools/gossipctl"
        ),
        .executableTarget(
            name: "framedump",
            dependencies: [
                "GossipInspect", "GossipWire", "GossipNet",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "tools/framedump"
        ),
        .executableTarget(
            name: "gossip-bench",
            dependencies: [
                "GossipWire", "GossipNet", "GossipML", "GossipNode", "CZlib", "GossipSecure",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            path: "tools/gossip-bench",
            swiftSettings: [.unsafeFlags(["-Ounchecked"], .when(configuration: .release))]
        ),
        // KnownBad/ (fuzzer inputs that once broke a decoder) is read by path, not bundled.
        .testTarget(name: "GossipWireTests", dependencies: ["GossipWire"], exclude: ["KnownBad"]),
        // Fixtures/ (pcaps, their script and README) is read by path (#filePath), not bundled.
        .testTarget(name: "GossipInspectTests", dependencies: ["GossipInspect", "GossipWire", "GossipSecure", .product(name: "Crypto", package: "swift-crypto")], exclude: ["Fixtures"]),
        .testTarget(name: "GossipNetTests", dependencies: ["GossipNet", "GossipWire", "GossipSecure"]),
        .testTarget(name: "GossipMLTests", dependencies: ["GossipML"]),
        // Vectors/ (the Noise test vectors and their provenance) is read by path (#filePath).
        .testTarget(name: "GossipSecureTests", dependencies: ["GossipSecure"], exclude: ["Vectors"]),
        .testTarget(name: "GossipNodeTests", dependencies: ["GossipNode", "GossipML", "GossipWire", "GossipNet", "GossipSecure"]),
        // Starts the real binaries; depending on them makes `swift test` build them first.
        .testTarget(
            name: "EndToEndTests",
            dependencies: ["GossipNode", "GossipML", "GossipWire", "GossipNet", "GossipSecure", "gossipd", "gossipctl", "framedump", "gossip-bench"]
        ),
    ]
)
