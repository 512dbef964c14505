// swift-tools-version:5.9
// The iOS sample apps' shared logic (SampleKit), the Swift twin of sample-apps/shared:
// the same wire records and files, checked against the same vectors
// (sample-apps/testdata). The SwiftUI apps under Apps/ are built by the Xcode project
// that project.yml describes (see README.md).

import PackageDescription

let package = Package(
    name: "MSocketSamples",
    platforms: [.iOS(.v16), .macOS(.v13)],
    products: [
        .library(name: "SampleKit", targets: ["SampleKit"]),
    ],
    dependencies: [
        // A path dependency's identity is its directory's name: "ios".
        .package(path: "../../ios"),
    ],
    targets: [
        .target(name: "SampleKit", dependencies: [.product(name: "MSocket", package: "ios")], path: "Sources/SampleKit"),
        // The tests read sample-apps/testdata through #filePath (SwiftPM keeps resources
        // inside a target's directory; the vectors belong to both languages).
        .testTarget(
            name: "SampleKitTests",
            dependencies: ["SampleKit", .product(name: "MSocket", package: "ios")],
            path: "Tests/SampleKitTests"
        ),
    ]
)
