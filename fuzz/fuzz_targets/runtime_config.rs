//! Any text given as a runtime config parses or fails with an error that
//! names the file; it never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let path = std::path::Path::new("/fuzz/rc.toml");
    if let Err(error) = bantam_capabilities::RuntimeConfig::parse(text, path) {
        assert!(error.to_string().starts_with("/fuzz/rc.toml:"), "{error}");
    }
});
