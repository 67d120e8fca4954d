//! Rebuild when a template changes: `include_dir!` embeds
//! `templates/`, and cargo does not see new files there by itself.

fn main() {
    println!("cargo:rerun-if-changed=templates");
}
