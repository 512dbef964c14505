// swift-tools-version:5.9
// Written by ios/write-package-swift.sh for a local build: build-xcframework.sh makes MSocketFFIC.xcframework.
// The msocket Swift package: the Swift API (Sources/MSocket), the Swift bindings UniFFI
// generates from the Rust library (Sources/MSocketFFI, kept in git and checked against
// the library in CI) and the library itself as MSocketFFIC.xcframework. See README.md.

import PackageDescription

let package = Package(
    name: "MSocket",
    platforms: [.iOS(.v14), .macOS(.v11)],
    products: [
        .library(name: "MSocket", targets: ["MSocket"]),
    ],
    targets: [
        .binaryTarget(name: "MSocketFFIC", path: "MSocketFFIC.xcframework"),
        .target(
            name: "MSocketFFI",
            dependencies: ["MSocketFFIC"],
            path: "Sources/MSocketFFI",
            exclude: ["README.md"]
        ),
        .target(name: "MSocket", dependencies: ["MSocketFFI"], path: "Sources/MSocket"),
        .testTarget(name: "MSocketTests", dependencies: ["MSocket"], path: "Tests/MSocketTests"),
    ]
)
