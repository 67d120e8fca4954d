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

/// Print `Error: <message>` on stderr, `Error:` red on a colour terminal.
pub fn print_error(message: impl std::fmt::Display) {
    print_line(if color() { "\x1b[1;31mError:\x1b[0m" } else { "Error:" }, message);
}

/// Print `Warning: <message>` on stderr, `Warning:` yellow on a colour
/// terminal.
pub fn print_warning(message: impl std::fmt::Display) {
    print_line(if color() { "\x1b[1;33mWarning:\x1b[0m" } else { "Warning:" }, message);
}

/// `prefix message` and a newline, in one write. stderr is unbuffered, so
/// `eprintln!` writes each piece of a formatted error on its own, and a
/// log line from another thread (or stdout, when both go to one pipe)
/// could land in the middle of the message.
fn print_line(prefix: &str, message: impl std::fmt::Display) {
    let line = format!("{prefix} {message}\n");
    let _ = std::io::Write::write_all(&mut std::io::stderr().lock(), line.as_bytes());
}
