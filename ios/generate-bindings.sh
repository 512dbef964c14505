#!/usr/bin/env bash
# Generates the Swift bindings kept in the package, Sources/MSocketFFI/MSocketFFI.swift,
# from the Rust library built from this checkout (UniFFI library mode, unformatted so the
# file is the same on every machine). Run it after changing udl/msocket.udl or ffi/, and
# commit the result; CI (ci/mobile, via ci/swift-symbols.py) fails while it differs.
#
#   generate-bindings.sh           rewrite the committed file
#   generate-bindings.sh --check   only compare; exit 1 if it differs
#
# Builds into CARGO_TARGET_DIR when set (default target/). Linux or macOS.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
cd "$root"
check=false
[ "${1:-}" = --check ] && check=true

target=${CARGO_TARGET_DIR:-target}
[[ $target == /* ]] || target=$root/$target
cargo build --locked --quiet -p msocket-ffi --lib
cargo build --locked --quiet -p msocket-ffi-bindgen
case $(uname -s) in
Darwin) lib=$target/debug/libmsocket_ffi.dylib ;;
*) lib=$target/debug/libmsocket_ffi.so ;;
esac
gen=$(mktemp -d)
trap 'rm -rf "$gen"' EXIT
"$target/debug/uniffi-bindgen" generate --no-format --library "$lib" --language swift --out-dir "$gen" >/dev/null

committed=$here/Sources/MSocketFFI/MSocketFFI.swift
if $check; then
    if cmp -s "$gen/MSocketFFI.swift" "$committed"; then
        echo "generate-bindings.sh: $committed is up to date"
        exit 0
    fi
    echo "generate-bindings.sh: $committed differs from the bindings of this checkout's library; run ios/generate-bindings.sh" >&2
    exit 1
fi
cp "$gen/MSocketFFI.swift" "$committed"
echo "generate-bindings.sh: wrote $committed"
