// swift-tools-version:5.9
// The msocket Swift package: the Swift API (Sources/MSocket) over the UniFFI bindings
// (Sources/MSocketFFI, generated) and the Rust library in MSocketFFIC.xcframework, both
// made by build-xcframework.sh on a Mac. See README.md.

import PackageDescription

let package = Package(
    name: "MSocket",
    platforms: [.iOS(.v13), .macOS(.v10_15)],
    products: [
        .library(name: "MSocket", targets: ["MSocket"]),
    ],
    targets: [
        // The static library and its C header; a release replaces `path:` with
        // `url:` + `checksum:` (build-xcframework.sh prints both).
        .binaryTarget(name: "MSocketFFIC", path: "MSocketFFIC.xcframework"),
        // The generated Swift bindings.
        .target(name: "MSocketFFI", dependencies: ["MSocketFFIC"], path: "Sources/MSocketFFI"),
        // The Swift API and the NWPathMonitor bridge.
        .target(name: "MSocket", dependencies: ["MSocketFFI"], path: "Sources/MSocket"),
        .testTarget(name: "MSocketTests", dependencies: ["MSocket"], path: "Tests/MSocketTests"),
    ]
)
