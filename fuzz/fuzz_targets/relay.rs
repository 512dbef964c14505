#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| msocket_fuzz::relay(data));
