//! Generates the UniFFI scaffolding (the C ABI the bindings call) from `udl/msocket.udl`,
//! and links the shared library for 16 KB pages on Linux and Android.
//!
//! Android 15+ devices may run with 16 KB memory pages; the loader there refuses a library
//! whose PT_LOAD segments are aligned to less than the page size, and Google Play rejects
//! apps that ship one. Older NDKs and the host linkers align to 4 KB by default, so the
//! alignment is asked for explicitly. It costs at most some padding in the file and works
//! on 4 KB-page systems too. `ci/check-page-size` checks the result.

fn main() {
    uniffi::generate_scaffolding_for_crate("../udl/msocket.udl", "msocket_ffi")
        .expect("udl/msocket.udl: UniFFI could not generate the scaffolding");

    // The target's OS, not the host's (build scripts run on the host).
    let target_os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if target_os == "android" || target_os == "linux" {
        // Only the cdylib (libmsocket_ffi.so): the staticlib is linked by the app's own
        // toolchain (iOS), and Mach-O has no such setting.
        println!("cargo:rustc-cdylib-link-arg=-Wl,-z,max-page-size=16384");
    }
}
