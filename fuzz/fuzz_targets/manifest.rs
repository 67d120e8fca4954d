//! Any text given as a spin.toml parses or fails with an error; it never
//! panics, and an error always names the file.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let path = std::path::Path::new("/fuzz/spin.toml");
    if let Err(error) = bantam_manifest::parse(text, path) {
        assert!(error.to_string().contains("spin.toml"), "{error}");
    }
});
