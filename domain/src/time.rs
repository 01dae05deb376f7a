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

/// `2026-12-01T10:00:42Z` (UTC, to the second) for Unix milliseconds: for exact windows.
pub fn format_second(ms: i64) -> String {
    let minute = format_minute(ms);
    format!(
        "{}:{:02}Z",
        &minute[..minute.len() - 1],
        ms.div_euclid(1000).rem_euclid(60)
    )
}

/// A non-negative span the one way Switchyard prints spans everywhere (CLI, messages,
/// dashboard): its largest unit and the next one, zero parts left out: `7d`, `3d 4h`, `4h 5m`,
/// `5m 12s`, `42s`. It parses back with the duration options (`--soak 3d4h`).
pub fn format_span(ms: i64) -> String {
    let seconds = ms.max(0) / 1000;
    let parts = [
        (seconds / 86_400, 'd'),
        ((seconds % 86_400) / 3600, 'h'),
        ((seconds % 3600) / 60, 'm'),
        (seconds % 60, 's'),
    ];
    let Some(first) = parts.iter().position(|&(n, _)| n > 0) else {
        return "0s".to_owned();
    };
    parts[first..(first + 2).min(parts.len())]
        .iter()
        .filter(|&&(n, _)| n > 0)
        .map(|(n, unit)| format!("{n}{unit}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// [`format_span`] for a [`std::time::Duration`] (settings such as the soak period).
pub fn format_duration(d: std::time::Duration) -> String {
    format_span(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
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
        assert_eq!(format_span(5 * 60_000 + 12_000), "5m 12s");
        assert_eq!(format_span((4 * 60 + 5) * 60_000), "4h 5m");
        assert_eq!(format_span(((3 * 24 + 4) * 60 + 59) * 60_000), "3d 4h");
        assert_eq!(format_span(7 * 86_400_000), "7d");
        assert_eq!(format_span(7 * 86_400_000 + 59_000), "7d");
        assert_eq!(format_span(3_600_000), "1h");
        assert_eq!(format_span(-5), "0s");
        assert_eq!(format_span(999), "0s");
    }

    #[test]
    fn printed_spans_parse_back_as_durations() {
        for secs in [1, 59, 60, 61, 3600, 3660, 86_400, 90_000, 7 * 86_400] {
            let printed = format_duration(std::time::Duration::from_secs(secs));
            let compact = printed.replace(' ', "");
            assert_eq!(
                humantime::parse_duration(&compact).map(|d| d.as_secs()),
                Ok(secs),
                "{printed}"
            );
        }
    }
}
