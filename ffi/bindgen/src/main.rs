//! UniFFI's bindings generator, from the same UniFFI version as `msocket-ffi`, so the
//! generated Kotlin and Swift match the library's scaffolding exactly:
//! `cargo run -p msocket-ffi-bindgen -- generate --library target/debug/libmsocket_ffi.so
//! --language kotlin --out-dir OUT` (ci/mobile does this).

fn main() {
    uniffi::uniffi_bindgen_main()
}
