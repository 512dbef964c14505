//! UniFFI's bindings generator, built from the same UniFFI version as the library so the
//! generated Kotlin and Swift match its scaffolding exactly:
//! `cargo run -p msocket-ffi --features bindgen --bin uniffi-bindgen -- generate --library
//! target/debug/libmsocket_ffi.so --language kotlin --out-dir OUT`.

fn main() {
    uniffi::uniffi_bindgen_main()
}
