#!/usr/bin/env bash
# Makes release VERSION of the Swift package, on macOS with Xcode and Rust:
#   1. builds MSocketFFIC.xcframework (build-xcframework.sh, which also checks that the
#      committed Swift bindings are the library's);
#   2. zips it as MSocketFFIC.xcframework.zip beside this script;
#   3. writes Package.swift with the binary target at the release asset's URL
#      (…/releases/download/VERSION/MSocketFFIC.xcframework.zip) and the zip's SHA-256
#      (write-package-swift.sh).
# Then: commit Package.swift, tag the commit VERSION, and attach the zip to the release of
# that tag under the same name. Apps depend on the tag; the zip must never change after.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
[ $# -eq 1 ] || { echo "usage: $0 VERSION" >&2; exit 2; }
version=$1

"$here/build-xcframework.sh"
zip=$here/MSocketFFIC.xcframework.zip
rm -f "$zip"
(cd "$here" && ditto -c -k --sequesterRsrc --keepParent MSocketFFIC.xcframework "$zip")
"$here/write-package-swift.sh" release "$version" "$zip"
if command -v swift >/dev/null; then
    swift_sum=$(cd "$here" && swift package compute-checksum "$zip")
    grep -q "checksum: \"$swift_sum\"" "$here/Package.swift" || {
        echo "release.sh: swift package compute-checksum gives $swift_sum, not the manifest's checksum" >&2
        exit 1
    }
fi
echo "release.sh: now commit ios/Package.swift, tag it $version, and attach $zip to release $version"
