#!/usr/bin/env bash
# Builds the Rust library as MSocketFFIC.xcframework (beside this script, not kept in git),
# on macOS with Xcode: libmsocket_ffi.a for iOS devices, the iOS simulator (arm64 +
# x86_64) and macOS (arm64 + x86_64), each with the C header and module map UniFFI
# generates. The module map lives in Headers/MSocketFFIC/, not at the root of Headers/:
# every static XCFramework's headers land in one include directory of the app's build,
# where two root-level module.modulemap files collide.
#
# It also generates the Swift bindings from the macOS build and fails if they differ from
# the committed Sources/MSocketFFI/MSocketFFI.swift: UniFFI checks at run time that the
# bindings and the library agree, so the package must never pair a library with other
# bindings (run generate-bindings.sh, commit, and build again).
#
# Needs: Rust (rustup), Xcode command-line tools. Run from anywhere. Then
# `write-package-swift.sh local` points Package.swift at the result; release.sh does all
# of it for a release.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
cd "$root"

if [ "$(uname -s)" != Darwin ]; then
    echo "build-xcframework.sh: needs macOS with Xcode (xcodebuild, lipo)" >&2
    exit 1
fi

export IPHONEOS_DEPLOYMENT_TARGET=14.0 MACOSX_DEPLOYMENT_TARGET=11.0
target=${CARGO_TARGET_DIR:-target}
[[ $target == /* ]] || target=$root/$target
ios=aarch64-apple-ios
sims=(aarch64-apple-ios-sim x86_64-apple-ios)
macs=(aarch64-apple-darwin x86_64-apple-darwin)
rustup target add "$ios" "${sims[@]}" "${macs[@]}"
for triple in "$ios" "${sims[@]}" "${macs[@]}"; do
    cargo build --locked --release -p msocket-ffi --lib --target "$triple"
done

cargo build --locked --release -p msocket-ffi-bindgen
out=$target/ios
rm -rf "$out"
mkdir -p "$out/gen" "$out/headers/MSocketFFIC" "$out/sim" "$out/mac"
"$target/release/uniffi-bindgen" generate --no-format \
    --library "$target/${macs[0]}/release/libmsocket_ffi.dylib" --language swift --out-dir "$out/gen"
if ! cmp -s "$out/gen/MSocketFFI.swift" "$here/Sources/MSocketFFI/MSocketFFI.swift"; then
    echo "build-xcframework.sh: the library's bindings differ from Sources/MSocketFFI/MSocketFFI.swift;" \
        "run ios/generate-bindings.sh and commit it" >&2
    exit 1
fi
cp "$out/gen/MSocketFFIC.h" "$out/headers/MSocketFFIC/"
cp "$out/gen/MSocketFFIC.modulemap" "$out/headers/MSocketFFIC/module.modulemap"

lib=libmsocket_ffi.a
lipo -create "$target/${sims[0]}/release/$lib" "$target/${sims[1]}/release/$lib" -output "$out/sim/$lib"
lipo -create "$target/${macs[0]}/release/$lib" "$target/${macs[1]}/release/$lib" -output "$out/mac/$lib"

rm -rf "$here/MSocketFFIC.xcframework"
xcodebuild -create-xcframework \
    -library "$target/$ios/release/$lib" -headers "$out/headers" \
    -library "$out/sim/$lib" -headers "$out/headers" \
    -library "$out/mac/$lib" -headers "$out/headers" \
    -output "$here/MSocketFFIC.xcframework"
echo "build-xcframework.sh: built $here/MSocketFFIC.xcframework"
