//! Progress display for long steps: drawn on a terminal's stderr only, so
//! logs and pipes get plain lines instead of escape codes.

use std::time::Duration;

/// Where progress bars draw: stderr when it is a terminal, else nowhere.
pub fn draw_target() -> indicatif::ProgressDrawTarget {
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        indicatif::ProgressDrawTarget::stderr()
    } else {
        indicatif::ProgressDrawTarget::hidden()
    }
}

/// A spinner with `message`, ticking until it is dropped or finished.
pub fn spinner(message: String) -> indicatif::ProgressBar {
    let spinner = indicatif::ProgressBar::with_draw_target(None, draw_target());
    spinner.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
            .expect("a valid template"),
    );
    spinner.set_message(message);
    spinner.enable_steady_tick(Duration::from_millis(100));
    spinner
}
