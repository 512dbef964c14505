#!/usr/bin/env bash
# Writes the Swift package manifest (Package.swift).
#
#   write-package-swift.sh release VERSION ZIP [OUT]
#       the binary target is the release asset: the URL of MSocketFFIC.xcframework.zip
#       attached to release VERSION, and the SHA-256 of ZIP (the same value
#       `swift package compute-checksum` prints);
#   write-package-swift.sh local [OUT]
#       the binary target is MSocketFFIC.xcframework beside the manifest, as
#       build-xcframework.sh leaves it (for working on the package itself).
#
# OUT defaults to Package.swift beside this script. MSOCKET_PACKAGE_PREFIX (default empty)
# is put before every path in the manifest, for a manifest at the repository's root
# (MSOCKET_PACKAGE_PREFIX=ios/). MSOCKET_RELEASE_BASE_URL overrides where releases live.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
base_url=${MSOCKET_RELEASE_BASE_URL:-https://github.com/msocket/msocket/releases/download}
prefix=${MSOCKET_PACKAGE_PREFIX:-}
die() { echo "write-package-swift.sh: $*" >&2; exit 2; }

sha256() {
    if command -v shasum >/dev/null; then
        shasum -a 256 "$1" | cut -d' ' -f1
    elif command -v sha256sum >/dev/null; then
        sha256sum "$1" | cut -d' ' -f1
    else
        die "needs shasum or sha256sum"
    fi
}

mode=${1:-}
case $mode in
release)
    [ $# -ge 3 ] && [ $# -le 4 ] || die "usage: $0 release VERSION ZIP [OUT]"
    version=$2 zip=$3 out=${4:-$here/Package.swift}
    [[ $version =~ ^[0-9A-Za-z][0-9A-Za-z._+-]*$ ]] || die "not a release version: '$version'"
    [ -f "$zip" ] || die "no such file: $zip"
    checksum=$(sha256 "$zip")
    [[ $checksum =~ ^[0-9a-f]{64}$ ]] || die "could not compute the checksum of $zip"
    binary=".binaryTarget(
            name: \"MSocketFFIC\",
            url: \"$base_url/$version/MSocketFFIC.xcframework.zip\",
            checksum: \"$checksum\"
        )"
    origin="release $version"
    ;;
local)
    [ $# -le 2 ] || die "usage: $0 local [OUT]"
    out=${2:-$here/Package.swift}
    binary=".binaryTarget(name: \"MSocketFFIC\", path: \"${prefix}MSocketFFIC.xcframework\")"
    origin="a local build: build-xcframework.sh makes MSocketFFIC.xcframework"
    ;;
*)
    die "usage: $0 release VERSION ZIP [OUT] | $0 local [OUT]"
    ;;
esac

tmp=$(mktemp "$(dirname "$out")/.Package.swift.XXXXXX")
cat >"$tmp" <<SWIFT
// swift-tools-version:5.9
// Written by ios/write-package-swift.sh for $origin.
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
        $binary,
        .target(
            name: "MSocketFFI",
            dependencies: ["MSocketFFIC"],
            path: "${prefix}Sources/MSocketFFI",
            exclude: ["README.md"]
        ),
        .target(name: "MSocket", dependencies: ["MSocketFFI"], path: "${prefix}Sources/MSocket"),
        .testTarget(name: "MSocketTests", dependencies: ["MSocket"], path: "${prefix}Tests/MSocketTests"),
    ]
)
SWIFT
mv "$tmp" "$out"
echo "wrote $out ($origin)"
