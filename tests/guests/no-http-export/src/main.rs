//! A WASI command: it exports `wasi:cli/run`, not an HTTP handler, so the
//! HTTP trigger must refuse it at start-up.

fn main() {
    println!("I am a command, not an HTTP handler");
}
