//! How output looks on a terminal: progress for long steps and coloured
//! `Error:`/`Warning:` prefixes, on stderr only when it is a terminal (and,
//! for colour, `NO_COLOR` is unset), so logs and pipes get plain lines.

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

/// Whether stderr gets colour: a terminal, and `NO_COLOR` unset.
pub fn color() -> bool {
    std::io::IsTerminal::is_terminal(&std::io::stderr()) && std::env::var_os("NO_COLOR").is_none()
}

/// `Error:`, red on a colour terminal.
pub fn error_prefix() -> &'static str {
    if color() { "\x1b[1;31mError:\x1b[0m" } else { "Error:" }
}

/// `Warning:`, yellow on a colour terminal.
pub fn warning_prefix() -> &'static str {
    if color() { "\x1b[1;33mWarning:\x1b[0m" } else { "Warning:" }
}
