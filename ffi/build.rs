//! Generates the UniFFI scaffolding (the C ABI the bindings call) from `udl/msocket.udl`.

fn main() {
    uniffi::generate_scaffolding_for_crate("../udl/msocket.udl", "msocket_ffi")
        .expect("udl/msocket.udl: UniFFI could not generate the scaffolding");
}
