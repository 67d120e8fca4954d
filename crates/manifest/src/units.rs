//! The size and duration syntax that flags, the runtime config's
//! `[limits]` table and the manifest's `[component.<id>.tool.bantam]`
//! table share: `64MiB`, `1GiB`, `500ms`, `30s`.

use std::time::Duration;

/// A size in bytes: a number with an optional unit (`KiB`, `MiB`, `GiB`,
/// or `KB`, `MB`, `GB`), as flags and the `[limits]` table write it.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let at = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(at);
    let number: u64 =
        number.parse().map_err(|_| format!("expected a size such as 10MiB, got `{text}`"))?;
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "k" | "K" => 1 << 10,
        "MiB" | "m" | "M" => 1 << 20,
        "GiB" | "g" | "G" => 1 << 30,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => {
            return Err(format!("unknown size unit `{other}` in `{text}`; use KiB, MiB or GiB"));
        }
    };
    number.checked_mul(scale).ok_or_else(|| format!("`{text}` is too large"))
}

/// A size in bytes for people to read: `512 B`, `3.2 KiB`, `1.5 MiB`.
pub fn human_size(bytes: u64) -> String {
    match bytes {
        0..1024 => format!("{bytes} B"),
        1024..1_048_576 => format!("{:.1} KiB", bytes as f64 / 1024.0),
        _ => format!("{:.1} MiB", bytes as f64 / 1_048_576.0),
    }
}

/// A duration: a number with a unit `ms`, `s` (the default) or `m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) =
        text.find(|c: char| !c.is_ascii_digit()).map_or((text, "s"), |at| text.split_at(at));
    let number: u64 = number
        .parse()
        .map_err(|_| format!("expected a duration such as 10s or 500ms, got `{text}`"))?;
    match unit.trim() {
        "ms" => Ok(Duration::from_millis(number)),
        "s" => Ok(Duration::from_secs(number)),
        "m" => Ok(Duration::from_secs(number * 60)),
        _ => Err(format!("unknown duration unit `{unit}` in `{text}`; use ms, s or m")),
    }
}

/// A size as [`parse_size`] reads it: in the largest binary unit that
/// divides it (`64MiB`), else in bytes (`1000B`).
pub fn format_size(bytes: u64) -> String {
    for (unit, scale) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
        if bytes != 0 && bytes.is_multiple_of(scale) {
            return format!("{}{unit}", bytes / scale);
        }
    }
    format!("{bytes}B")
}

/// A duration as [`parse_duration`] reads it: whole seconds (`30s`), else
/// milliseconds (`1500ms`).
pub fn format_duration(duration: Duration) -> String {
    match duration.subsec_millis() {
        0 => format!("{}s", duration.as_secs()),
        _ => format!("{}ms", duration.as_millis()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("10"), Ok(10));
        assert_eq!(parse_size("1GB"), Ok(1_000_000_000));
        assert!(parse_size("1TiB").unwrap_err().contains("unknown size unit"));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("1h").unwrap_err().contains("unknown duration unit"));
    }

    #[test]
    fn sizes_and_durations_are_written_as_they_are_read() {
        assert_eq!(format_size(64 << 20), "64MiB");
        assert_eq!(format_size(1 << 30), "1GiB");
        assert_eq!(format_size(1536), "1536B");
        assert_eq!(format_size(1000), "1000B");
        assert_eq!(format_size(0), "0B");
        assert_eq!(format_duration(Duration::from_secs(30)), "30s");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format_duration(Duration::ZERO), "0s");
    }
}
