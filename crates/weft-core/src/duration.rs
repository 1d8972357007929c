//! Human durations in manifests (`500ms`, `30s`, `10m`, `2h`, `1d`, or combined
//! like `1h30m`) parsed into milliseconds.

/// Parses a duration string into milliseconds. A bare number is rejected so
/// that `timeout: 30` cannot silently mean 30 milliseconds.
pub fn parse_ms(text: &str) -> Result<u64, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty duration".to_owned());
    }
    let mut total: u64 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let n_digits = rest.bytes().take_while(|b| b.is_ascii_digit()).count();
        if n_digits == 0 {
            return Err(format!(
                "`{text}` is not a duration (expected e.g. 500ms, 30s, 10m, 2h, 1d)"
            ));
        }
        let number: u64 = rest[..n_digits]
            .parse()
            .map_err(|_| format!("`{text}` has a number too large"))?;
        rest = &rest[n_digits..];
        let n_unit = rest.bytes().take_while(|b| b.is_ascii_alphabetic()).count();
        let unit_ms: u64 = match &rest[..n_unit] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "" => return Err(format!("`{text}` lacks a unit (ms, s, m, h or d)")),
            other => {
                return Err(format!(
                    "`{text}` has an unknown unit `{other}` (ms, s, m, h or d)"
                ));
            }
        };
        rest = &rest[n_unit..];
        total = number
            .checked_mul(unit_ms)
            .and_then(|ms| total.checked_add(ms))
            .ok_or_else(|| format!("`{text}` is too long"))?;
    }
    Ok(total)
}

/// Formats milliseconds in the largest unit that divides them exactly
/// (`7d`, `90s`, `1500ms`): a form [`parse_ms`] reads back.
pub fn format_ms(ms: u64) -> String {
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if ms > 0 && ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

#[cfg(test)]
mod tests {
    use super::{format_ms, parse_ms};

    #[test]
    fn formats_in_the_largest_exact_unit() {
        for ms in [1, 999, 1_000, 90_000, 3_600_000, 86_400_000 * 7, 1_500] {
            assert_eq!(parse_ms(&format_ms(ms)), Ok(ms), "{}", format_ms(ms));
        }
        assert_eq!(format_ms(604_800_000), "7d");
    }

    #[test]
    fn parses_and_rejects() {
        let cases: &[(&str, Result<u64, ()>)] = &[
            ("500ms", Ok(500)),
            ("30s", Ok(30_000)),
            ("10m", Ok(600_000)),
            ("2h", Ok(7_200_000)),
            ("1d", Ok(86_400_000)),
            ("1h30m", Ok(5_400_000)),
            (" 1s ", Ok(1_000)),
            ("30", Err(())),
            ("", Err(())),
            ("abc", Err(())),
            ("5 years", Err(())),
            ("10x", Err(())),
            ("99999999999999999999d", Err(())),
        ];
        for (input, expected) in cases {
            assert_eq!(
                parse_ms(input).map_err(|_| ()),
                *expected,
                "input {input:?}"
            );
        }
    }
}
