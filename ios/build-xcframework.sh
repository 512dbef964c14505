#!/usr/bin/env bash
# Builds what the Swift package needs from the Rust workspace, on macOS with Xcode:
#   MSocketFFIC.xcframework     libmsocket_ffi.a for iOS devices, the iOS simulator
#                               (arm64 + x86_64) and macOS (arm64 + x86_64), with the C
#                               header and module map UniFFI generates;
#   Sources/MSocketFFI/         the generated Swift bindings;
#   MSocketFFIC.xcframework.zip and its checksum, for a release's `.binaryTarget(url:checksum:)`.
# Needs: Rust (rustup), Xcode command-line tools. Run from anywhere.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
cd "$root"

if [ "$(uname -s)" != Darwin ]; then
    echo "build-xcframework.sh: needs macOS with Xcode (xcodebuild, lipo)" >&2
    exit 1
fi

ios=aarch64-apple-ios
sims=(aarch64-apple-ios-sim x86_64-apple-ios)
macs=(aarch64-apple-darwin x86_64-apple-darwin)
rustup target add "$ios" "${sims[@]}" "${macs[@]}"
for target in "$ios" "${sims[@]}" "${macs[@]}"; do
    cargo build --locked --release -p msocket-ffi --lib --target "$target"
done

# The bindings, generated from a built library (UniFFI library mode).
cargo build --locked --release -p msocket-ffi-bindgen
out=$root/target/ios
rm -rf "$out"
mkdir -p "$out/gen" "$out/headers" "$out/sim" "$out/mac"
target/release/uniffi-bindgen generate --library "target/${macs[0]}/release/libmsocket_ffi.dylib" \
    --language swift --out-dir "$out/gen"
cp "$out/gen/MSocketFFIC.h" "$out/headers/"
cp "$out/gen/MSocketFFIC.modulemap" "$out/headers/module.modulemap"

lib=libmsocket_ffi.a
lipo -create "target/${sims[0]}/release/$lib" "target/${sims[1]}/release/$lib" -output "$out/sim/$lib"
lipo -create "target/${macs[0]}/release/$lib" "target/${macs[1]}/release/$lib" -output "$out/mac/$lib"

rm -rf "$here/MSocketFFIC.xcframework"
xcodebuild -create-xcframework \
    -library "target/$ios/release/$lib" -headers "$out/headers" \
    -library "$out/sim/$lib" -headers "$out/headers" \
    -library "$out/mac/$lib" -headers "$out/headers" \
    -output "$here/MSocketFFIC.xcframework"

mkdir -p "$here/Sources/MSocketFFI"
cp "$out/gen/MSocketFFI.swift" "$here/Sources/MSocketFFI/MSocketFFI.swift"

(cd "$here" && rm -f MSocketFFIC.xcframework.zip && zip -qry MSocketFFIC.xcframework.zip MSocketFFIC.xcframework)
echo "built $here/MSocketFFIC.xcframework and Sources/MSocketFFI/MSocketFFI.swift"
echo "release zip: $here/MSocketFFIC.xcframework.zip, checksum: $(cd "$here" && swift package compute-checksum MSocketFFIC.xcframework.zip)"
