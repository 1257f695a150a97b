//! Durations as people read them in alert texts and CLI output ("45 s",
//! "3 min", "2 h 5 min", "3 d 4 h"), and as they type them (`30m`, `7d`).
//!
//! It exists because a whole-minutes count said "disconnected for 0 min"
//! about a link that had been down for 50 seconds.

/// `ms` milliseconds in the largest two units that matter, rounded down;
/// negative durations read as "0 s".
pub fn human(ms: i64) -> String {
    let secs = ms.max(0) / 1000;
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s} s"),
        (0, 0, _) if s == 0 || m >= 10 => format!("{m} min"),
        (0, 0, _) => format!("{m} min {s} s"),
        (0, _, 0) => format!("{h} h"),
        (0, _, _) => format!("{h} h {m} min"),
        (_, 0, _) => format!("{d} d"),
        _ => format!("{d} d {h} h"),
    }
}

/// Parses a lifetime as people type it: a whole number followed by `m`,
/// `h` or `d` (`30m`, `24h`, `7d`). Bounds are the caller's.
pub fn parse(text: &str) -> Result<std::time::Duration, String> {
    const FORMAT: &str = "must be a number followed by m, h or d (e.g. 30m, 24h, 7d)";
    let text = text.trim();
    let (number, unit) = text.split_at(text.len().saturating_sub(1));
    let n: u64 = number.parse().map_err(|_| FORMAT.to_string())?;
    let secs = match unit {
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        "d" => n.saturating_mul(86_400),
        _ => return Err(FORMAT.into()),
    };
    Ok(std::time::Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::{human, parse};

    #[test]
    fn lifetimes_parse_in_minutes_hours_and_days() {
        assert_eq!(parse("2m").unwrap().as_secs(), 120);
        assert_eq!(parse(" 24h ").unwrap().as_secs(), 86_400);
        assert_eq!(parse("7d").unwrap().as_secs(), 604_800);
        for bad in ["", "7", "d", "7w", "-1d", "1.5h"] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_duration_under_a_minute_is_never_zero_minutes() {
        assert_eq!(human(50_000), "50 s");
        assert_eq!(human(0), "0 s");
        assert_eq!(human(-5), "0 s");
    }

    #[test]
    fn durations_read_in_their_two_largest_units() {
        assert_eq!(human(60_000), "1 min");
        assert_eq!(human(90_000), "1 min 30 s");
        assert_eq!(human(12 * 60_000 + 5_000), "12 min");
        assert_eq!(human(3_600_000), "1 h");
        assert_eq!(human(2 * 3_600_000 + 5 * 60_000), "2 h 5 min");
        assert_eq!(human(86_400_000), "1 d");
        assert_eq!(human(3 * 86_400_000 + 4 * 3_600_000 + 59_000), "3 d 4 h");
    }
}
