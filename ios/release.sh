#!/usr/bin/env bash
# Makes release VERSION of the Swift package, on macOS with Xcode and Rust:
#   1. builds MSocketFFIC.xcframework (build-xcframework.sh, which also checks that the
#      committed Swift bindings are the library's);
#   2. zips it as MSocketFFIC.xcframework.zip beside this script;
#   3. writes Package.swift with the binary target at the release asset's URL
#      (…/releases/download/VERSION/MSocketFFIC.xcframework.zip) and the zip's SHA-256
#      (write-package-swift.sh).
#      With --root-manifest it also writes the repository's root Package.swift (paths
#      under ios/): SwiftPM reads a package's manifest only at the root of the repository
#      its URL names, so that is the one apps fetching this repository by URL get.
# Then: commit the manifest(s), tag the commit VERSION, and attach the zip to the release
# of that tag under the same name. Apps depend on the tag; the zip must never change after.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root_manifest=false
if [ "${1:-}" = --root-manifest ]; then
    root_manifest=true
    shift
fi
[ $# -eq 1 ] || { echo "usage: $0 [--root-manifest] VERSION" >&2; exit 2; }
version=$1

"$here/build-xcframework.sh"
zip=$here/MSocketFFIC.xcframework.zip
rm -f "$zip"
(cd "$here" && ditto -c -k --sequesterRsrc --keepParent MSocketFFIC.xcframework "$zip")
"$here/write-package-swift.sh" release "$version" "$zip"
if $root_manifest; then
    MSOCKET_PACKAGE_PREFIX=ios/ "$here/write-package-swift.sh" release "$version" "$zip" "$(dirname "$here")/Package.swift"
fi
if command -v swift >/dev/null; then
    swift_sum=$(cd "$here" && swift package compute-checksum "$zip")
    grep -q "checksum: \"$swift_sum\"" "$here/Package.swift" || {
        echo "release.sh: swift package compute-checksum gives $swift_sum, not the manifest's checksum" >&2
        exit 1
    }
fi
echo "release.sh: now commit the manifest(s), tag the commit $version, and attach $zip to release $version"
