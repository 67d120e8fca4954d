//! An HTTP component that also imports an interface no host provides:
//! starting it must fail with a message naming the import.

use spin_sdk::http::{IntoResponse, Request, Response};
use spin_sdk::http_component;

wit_bindgen::generate!({
    inline: "
        package bantam-test:missing;
        interface nothing { ping: func() -> u32; }
        world guest { import nothing; }
    ",
});

#[http_component]
fn handle(_request: Request) -> anyhow::Result<impl IntoResponse> {
    let pong = bantam_test::missing::nothing::ping();
    Ok(Response::new(200, format!("pong {pong}")))
}
