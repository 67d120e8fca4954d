//! One module per `bantam` subcommand.

pub mod build;
pub mod deploy;
pub mod new;
pub mod registry;
pub mod serve;
pub mod up;
pub mod watch;

/// Parse a `KEY=VALUE` flag value (`--env`, `--value`, `--annotation`):
/// the key must not be empty; the value may be, and may hold `=`.
pub fn parse_key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("expected KEY=VALUE, got `{text}`")),
    }
}
