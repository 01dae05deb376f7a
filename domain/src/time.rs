//! Just enough calendar to write the gate's messages ("soak ends 2026-12-01T10:00Z, in 3d 4h")
//! without a clock or a time library: the domain is given milliseconds and formats them.

/// `2026-12-01T10:00Z` (UTC, to the minute) for Unix milliseconds.
pub fn format_minute(ms: i64) -> String {
    let minutes = ms.div_euclid(60_000);
    let (days, minute_of_day) = (minutes.div_euclid(1440), minutes.rem_euclid(1440));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}Z",
        minute_of_day / 60,
        minute_of_day % 60
    )
}

/// `3d 4h`, `4h 5m`, `5m`, or `42s` under a minute, for a non-negative span.
pub fn format_span(ms: i64) -> String {
    let minutes = ms.max(0) / 60_000;
    let (d, h, m) = (minutes / 1440, (minutes % 1440) / 60, minutes % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{}s", ms.max(0) / 1000),
        (0, 0, m) => format!("{m}m"),
        (0, h, m) => format!("{h}h {m}m"),
        (d, h, _) => format!("{d}d {h}h"),
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minutes_format_as_utc_dates() {
        assert_eq!(format_minute(0), "1970-01-01T00:00Z");
        // 2026-12-01T10:00:00Z
        assert_eq!(format_minute(1_796_119_200_000), "2026-12-01T10:00Z");
        // 2024-02-29T23:59:30Z (leap day; seconds are dropped)
        assert_eq!(format_minute(1_709_251_170_000), "2024-02-29T23:59Z");
    }

    #[test]
    fn spans_read_naturally() {
        assert_eq!(format_span(30_000), "30s");
        assert_eq!(format_span(5 * 60_000), "5m");
        assert_eq!(format_span((4 * 60 + 5) * 60_000), "4h 5m");
        assert_eq!(format_span(((3 * 24 + 4) * 60 + 59) * 60_000), "3d 4h");
        assert_eq!(format_span(-5), "0s");
    }
}
