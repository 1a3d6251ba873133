// swift-tools-version: 6.0
// gossip: decentralized peer-to-peer model training over a hand-written binary frame protocol.
import PackageDescription

// GossipML's GEMM micro-kernel uses AVX2 + FMA in release builds on x86_64 (Haswell, 2013,
// or newer CPUs); debug builds and other architectures use portable SIMD code.
//
// GossipML is also optimized in debug builds: unoptimized, its kernels run about 170 times
// slower, which would make `swift test` (debug) and its end-to-end training runs crawl.
let mlDebugOptimized: [SwiftSetting] = [.unsafeFlags(["-O"], .when(configuration: .debug))]
#if arch(x86_64)
let mlSwiftSettings: [SwiftSetting] = mlDebugOptimized + [
    .unsafeFlags(["-target-cpu", "haswell"], .when(configuration: .release)),
    .define("GOSSIP_FMA", .when(configuration: .release)),
]
#else
let mlSwiftSettings: [SwiftSetting] = mlDebugOptimized
#endif

let package = Package(
    name: "gossip",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "gossipd", targets: ["gossipd"]),
        .executable(name: "gossipctl", targets: ["gossipctl"]),
        .executable(name: "framedump", targets: ["framedump"]),
        .executable(name: "gossip-bench", targets: ["gossip-bench"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-crypto", from: "4.5.2"),
    ],
    targets: [
        // System zlib (apt: zlib1g-dev). No logic here.
        .systemLibrary(
            name: "CZlib",
            pkgConfig: "zlib",
            providers: [.apt(["zlib1g-dev"]), .brew(["zlib"])]
        ),
        // Frame header, messages, tensor payloads, compression, limits. No I/O.
        .target(name: "GossipWire", dependencies: ["CZlib"]),
        // POSIX sockets on Dispatch sources, framed connections, RPC.
        .target(name: "GossipNet", dependencies: ["GossipWire"]),
        // Noise (revision 34) handshake and cipher states as pure state machines; key files.
        // No networking; the only I/O is reading and writing key files.
        .target(
            name: "GossipSecure",
            dependencies: [.product(name: "Crypto", package: "swift-crypto")],
            exclude: ["README.md"]
        ),
        // Tensors, MLP, SGD, datasets, averaging, safetensors. No networking.
        .target(
            name: "GossipML",
            dependencies: ["CZlib"],
            resources: [.copy("Resources/digits.csv.gz")],
            swiftSettings: mlSwiftSettings
        ),
        // Bootstrap and peer roles, membership, gossip loop, status.
        .target(
            name: "GossipNode",
            dependencies: [
                "GossipWire", "GossipNet", "GossipML",
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(
            name: "gossipd",
            dependencies: [
                "GossipNode",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(
            name: "gossipctl",
            dependencies: [
                "GossipNode",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "tools/gossipctl"
        ),
        .executableTarget(
            name: "framedump",
            dependencies: [
                "GossipWire", "GossipNet",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "tools/framedump"
        ),
        .executableTarget(
            name: "gossip-bench",
            dependencies: ["GossipWire", "GossipNet", "GossipML", "GossipNode", "CZlib"],
            path: "tools/gossip-bench",
            swiftSettings: [.unsafeFlags(["-Ounchecked"], .when(configuration: .release))]
        ),
        // Fixtures/ (a pcap, its script and README) is read by path (#filePath), not bundled.
        .testTarget(name: "GossipWireTests", dependencies: ["GossipWire"], exclude: ["Fixtures"]),
        .testTarget(name: "GossipNetTests", dependencies: ["GossipNet", "GossipWire"]),
        .testTarget(name: "GossipMLTests", dependencies: ["GossipML"]),
        // Vectors/ (the Noise test vectors and their provenance) is read by path (#filePath).
        .testTarget(name: "GossipSecureTests", dependencies: ["GossipSecure"], exclude: ["Vectors"]),
        .testTarget(name: "GossipNodeTests", dependencies: ["GossipNode", "GossipML", "GossipWire", "GossipNet"]),
        // Starts the real binaries; depending on them makes `swift test` build them first.
        .testTarget(
            name: "EndToEndTests",
            dependencies: ["GossipNode", "GossipML", "GossipWire", "GossipNet", "gossipd", "gossipctl", "framedump"]
        ),
    ]
)
