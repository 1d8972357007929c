//! How the dashboard shows times and durations: `850 ms`, `33.8 s`,
//! `4 min 5 s`, `2 h 5 min`, `3 d 4 h`; instants as UTC `2026-11-29 17:05:03`.

/// A duration in milliseconds in human units, two units at most.
pub(crate) fn human_ms(ms: i64) -> String {
    let ms = ms.max(0);
    let (s, m, h, d) = (ms / 1000, ms / 60_000, ms / 3_600_000, ms / 86_400_000);
    if ms < 1_000 {
        format!("{ms} ms")
    } else if ms < 60_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else if ms < 3_600_000 {
        two(m, "min", s % 60, "s")
    } else if ms < 86_400_000 {
        two(h, "h", m % 60, "min")
    } else {
        two(d, "d", h % 24, "h")
    }
}

fn two(major: i64, major_unit: &str, minor: i64, minor_unit: &str) -> String {
    if minor == 0 {
        format!("{major} {major_unit}")
    } else {
        format!("{major} {major_unit} {minor} {minor_unit}")
    }
}

/// An RFC 3339 instant shown as `YYYY-MM-DD HH:MM:SS` (UTC, as stored).
pub(crate) fn short_time(rfc3339: &str) -> String {
    let t = rfc3339.replace('T', " ");
    t.get(..19).map_or(t.clone(), str::to_owned)
}

/// A count, `10,000+` when it reached its cap.
pub(crate) fn count(n: i64, capped: bool) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if capped {
        out.push('+');
    }
    out
}

/// A time filter: an RFC 3339 instant, a `datetime-local` value
/// (`2026-11-29T17:05`, read as UTC) or a duration before `now_ms` (`1h`).
pub(crate) fn parse_instant(text: &str, now_ms: i64) -> Option<i64> {
    let text = text.trim();
    if let Ok(ms) = weft_core::duration::parse_ms(text) {
        return Some(now_ms - ms as i64);
    }
    weft_store::parse_rfc3339(text)
        .or_else(|| weft_store::parse_rfc3339(&format!("{text}:00Z")))
        .or_else(|| weft_store::parse_rfc3339(&format!("{text}Z")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_in_human_units() {
        assert_eq!(human_ms(850), "850 ms");
        assert_eq!(human_ms(33_758), "33.8 s");
        assert_eq!(human_ms(245_000), "4 min 5 s");
        assert_eq!(human_ms(7_500_000), "2 h 5 min");
        assert_eq!(human_ms(3_600_000), "1 h");
        assert_eq!(human_ms(2 * 86_400_000 + 3 * 3_600_000), "2 d 3 h");
    }

    #[test]
    fn counts_and_instants() {
        assert_eq!(count(10_000, true), "10,000+");
        assert_eq!(count(999, false), "999");
        assert_eq!(
            short_time("2026-11-29T17:05:03.123Z"),
            "2026-11-29 17:05:03"
        );
        let now = weft_store::parse_rfc3339("2026-11-29T17:00:00Z").unwrap();
        assert_eq!(parse_instant("1h", now), Some(now - 3_600_000));
        assert_eq!(
            parse_instant("2026-11-29T16:00", now),
            Some(now - 3_600_000)
        );
        assert_eq!(parse_instant("yesterday", now), None);
    }
}
