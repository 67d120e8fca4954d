//! `allowed_outbound_hosts` entries and outbound URLs: parsing and
//! matching never panic, and the entry a refusal message suggests for a
//! URL really admits that URL.
#![no_main]

use bantam_manifest::allowed_hosts::{AllowedHost, OutboundTarget};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (&str, &str)| {
    let (entry, url) = input;
    let entry = AllowedHost::parse(entry);
    if let Ok(target) = OutboundTarget::parse(url) {
        if let Ok(entry) = &entry {
            let _ = entry.admits(&target);
        }
        // Spin grants only alphabetic schemes; others are never admitted.
        // `self` and `self.alt` as entries mean the app itself, so a host
        // of that name cannot be granted by name (in Spin neither).
        if !target.scheme.chars().all(|c| c.is_ascii_alphabetic())
            || matches!(target.host.as_str(), "self" | "self.alt")
        {
            return;
        }
        let suggested = target.as_entry();
        let suggested = AllowedHost::parse(&suggested)
            .unwrap_or_else(|e| panic!("suggested entry {suggested:?} does not parse: {e}"));
        assert!(suggested.admits(&target), "{suggested} does not admit {target}");
    }
});
