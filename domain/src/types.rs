//! Validated newtypes. Each `parse` returns a `Result`; once parsed, a value is valid everywhere.

use std::fmt;

/// Input that does not have the allowed form. The message says what was wrong and what is allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidInput(pub String);

/// A migration's key: `[a-z0-9][a-z0-9._-]{0,127}`, e.g. `users.username-to-handle`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MigrationKey(String);

impl MigrationKey {
    pub const MAX_LEN: usize = 128;

    pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
        Self::check(raw)?;
        Ok(Self(raw.to_owned()))
    }

    /// Whether `raw` is a valid key, without making one (a lookup by key needs no copy).
    pub fn check(raw: &str) -> Result<(), InvalidInput> {
        let allowed = "a migration key is 1 to 128 characters of a-z, 0-9, '.', '_' or '-', \
                       starting with a letter or digit (e.g. users.username-to-handle)";
        let bytes = raw.as_bytes();
        let first_ok = bytes
            .first()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        let rest_ok = bytes.iter().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        });
        if !first_ok || !rest_ok || bytes.len() > Self::MAX_LEN {
            return Err(InvalidInput(format!(
                "invalid migration key {:?}: {allowed}",
                truncate_for_message(raw)
            )));
        }
        Ok(())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for MigrationKey {
    type Error = InvalidInput;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<MigrationKey> for String {
    fn from(key: MigrationKey) -> Self {
        key.0
    }
}

impl fmt::Display for MigrationKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A fraction in basis points, 0..=10000 (10000 = 100%).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BasisPoints(u16);

impl BasisPoints {
    pub const ZERO: Self = Self(0);
    pub const FULL: Self = Self(10_000);

    #[inline]
    pub fn new(bp: u32) -> Result<Self, InvalidInput> {
        if bp > 10_000 {
            return Err(InvalidInput(format!(
                "rollout {bp} basis points is out of range: allowed 0..=10000 (0% to 100%)"
            )));
        }
        Ok(Self(bp as u16))
    }

    /// Parses a percentage such as `12.5` or `100` (at most two decimals: basis points).
    pub fn from_percent(raw: &str) -> Result<Self, InvalidInput> {
        let err = || {
            InvalidInput(format!(
                "invalid percentage {:?}: allowed 0 to 100 with at most two decimals (e.g. 2.5)",
                truncate_for_message(raw)
            ))
        };
        let raw = raw.trim().trim_end_matches('%');
        let (whole, frac) = raw.split_once('.').unwrap_or((raw, ""));
        if whole.is_empty() && frac.is_empty()
            || frac.len() > 2
            || !whole.bytes().all(|b| b.is_ascii_digit())
            || !frac.bytes().all(|b| b.is_ascii_digit())
            || whole.len() > 3
        {
            return Err(err());
        }
        let whole: u32 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| err())?
        };
        let frac: u32 = format!("{frac:0<2}").parse().map_err(|_| err())?;
        Self::new(whole * 100 + frac).map_err(|_| err())
    }

    pub fn get(self) -> u32 {
        u32::from(self.0)
    }

    pub fn is_full(self) -> bool {
        self == Self::FULL
    }

    pub fn is_zero(self) -> bool {
        self == Self::ZERO
    }
}

impl TryFrom<u32> for BasisPoints {
    type Error = InvalidInput;
    fn try_from(value: u32) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<BasisPoints> for u32 {
    fn from(bp: BasisPoints) -> Self {
        bp.get()
    }
}

impl fmt::Display for BasisPoints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (whole, frac) = (self.0 / 100, self.0 % 100);
        if frac == 0 {
            write!(f, "{whole}%")
        } else if frac % 10 == 0 {
            write!(f, "{whole}.{}%", frac / 10)
        } else {
            write!(f, "{whole}.{frac:02}%")
        }
    }
}

/// The global snapshot version. It only grows; every change to any migration takes the next one,
/// and a migration's `version` is the snapshot version of its last change.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version(pub u64);

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Why a change was made: required on every mutation (rule 9), kept in the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason(String);

impl Reason {
    pub const MAX_LEN: usize = 2000;

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Bounds user-supplied text quoted back in an error message.
pub(crate) fn truncate_for_message(raw: &str) -> String {
    const MAX: usize = 64;
    if raw.chars().count() <= MAX {
        raw.to_owned()
    } else {
        let mut s: String = raw.chars().take(MAX).collect();
        s.push('…');
        s
    }
}

/// Which characters of the control range a text field may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextKind {
    /// One line: names, owners, entity kinds, services, instance ids, runners. No control
    /// character at all.
    Line,
    /// Prose a person writes: reasons and descriptions. Line breaks and tabs, no other control
    /// character (a carriage return alone could overwrite a line in a terminal or a log).
    Prose,
    /// A position a client keeps for itself, such as a backfill cursor (the last key it
    /// processed, which may be any text the application's table holds): anything but NUL,
    /// which PostgreSQL text cannot store.
    Opaque,
}

impl TextKind {
    fn allows(self, c: char) -> bool {
        match self {
            TextKind::Line => !c.is_control(),
            TextKind::Prose => !c.is_control() || matches!(c, '\n' | '\t'),
            TextKind::Opaque => c != '\0',
        }
    }

    fn allowed(self) -> &'static str {
        match self {
            TextKind::Line => "printable characters on one line (no control characters)",
            TextKind::Prose => "printable text, line breaks and tabs (no other control characters)",
            TextKind::Opaque => "any text but NUL",
        }
    }
}

/// Refuses the control characters a text field may not hold, naming the field, the character
/// and where it is. Every free text the server stores passes here. A NUL above all: PostgreSQL
/// cannot store it in TEXT while SQLite can, so without this one check the two databases would
/// answer the same request differently (one of them with an internal error). The other control
/// characters (escape sequences, carriage returns) would reach the terminals and logs that print
/// these fields.
pub fn check_text(what: &str, raw: &str, kind: TextKind) -> Result<(), InvalidInput> {
    match raw.chars().enumerate().find(|(_, c)| !kind.allows(*c)) {
        None => Ok(()),
        Some((at, c)) => Err(InvalidInput(format!(
            "invalid {what}: control character U+{:04X} at character {}; allowed {}",
            u32::from(c),
            at + 1,
            kind.allowed()
        ))),
    }
}

/// The largest number the server stores as a count or a version: both databases keep them as
/// signed 64-bit integers (BIGINT), so a larger `u64` would wrap on the way in.
pub const MAX_STORED_NUMBER: u64 = i64::MAX as u64;

/// Checks a count a client reports (rows done, rows in total) against what can be stored.
pub fn check_count(what: &str, n: u64) -> Result<u64, InvalidInput> {
    if n > MAX_STORED_NUMBER {
        return Err(InvalidInput(format!(
            "{what} {n} is out of range: allowed 0 to {MAX_STORED_NUMBER}"
        )));
    }
    Ok(n)
}

/// Checks a short label such as a service name or instance id: 1 to 128 printable characters.
pub fn parse_label(what: &str, raw: &str) -> Result<String, InvalidInput> {
    let trimmed = raw.trim();
    if trimmed.is_empty() || trimmed.len() > 128 {
        return Err(InvalidInput(format!(
            "invalid {what} {:?}: allowed 1 to 128 printable characters",
            truncate_for_message(raw)
        )));
    }
    check_text(what, trimmed, TextKind::Line)?;
    Ok(trimmed.to_owned())
}

/// A reason of the allowed length (`None`: empty or too long, a rule 9 refusal), or the control
/// character it may not hold.
pub(crate) fn new_reason(raw: &str) -> Result<Option<Reason>, InvalidInput> {
    let trimmed = raw.trim();
    check_text("reason", trimmed, TextKind::Prose)?;
    Ok((!trimmed.is_empty() && trimmed.len() <= Reason::MAX_LEN)
        .then(|| Reason(trimmed.to_owned())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_documented_pattern() {
        for ok in ["users.username-to-handle", "a", "0_x", &"a".repeat(128)] {
            assert!(MigrationKey::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Users", ".x", "-x", "a b", "ä", &"a".repeat(129), "a/b"] {
            let err = MigrationKey::parse(bad).unwrap_err();
            assert!(err.0.contains("a-z, 0-9"), "{err}");
        }
    }

    #[test]
    fn text_refuses_control_characters_prose_keeps_line_breaks_and_tabs() {
        for ok in ["", "plain", "ünïcödé ✓", "a b"] {
            assert!(check_text("owner", ok, TextKind::Line).is_ok(), "{ok:?}");
        }
        for ok in ["one\ntwo", "col\tcol"] {
            assert!(check_text("reason", ok, TextKind::Prose).is_ok(), "{ok:?}");
        }
        assert!(check_text("cursor", "a\tb\nc\u{1b}", TextKind::Opaque).is_ok());
        let err = check_text("cursor", "ab\0c", TextKind::Opaque).unwrap_err();
        assert_eq!(
            err.0,
            "invalid cursor: control character U+0000 at character 3; allowed any text but NUL"
        );
        for bad in ["a\nb", "a\tb", "\u{7f}", "\u{85}"] {
            assert!(check_text("owner", bad, TextKind::Line).is_err(), "{bad:?}");
        }
        for bad in ["a\0b", "a\rb", "\u{1b}[2J", "\u{7}"] {
            let err = check_text("reason", bad, TextKind::Prose).unwrap_err();
            assert!(err.0.contains("line breaks and tabs"), "{bad:?}: {err}");
        }
        assert!(parse_label("service name", "api\0").is_err());
        assert_eq!(parse_label("service name", " api\n").unwrap(), "api");
    }

    #[test]
    fn reasons_keep_prose_and_refuse_other_control_characters() {
        assert!(new_reason("why:\n\tbecause").unwrap().is_some());
        assert!(new_reason("  ").unwrap().is_none(), "empty: rule 9");
        let err = new_reason("deploy\0").unwrap_err();
        assert!(
            err.0
                .starts_with("invalid reason: control character U+0000"),
            "{err}"
        );
    }

    #[test]
    fn counts_fit_a_signed_64_bit_column() {
        assert_eq!(
            check_count("rows_done", MAX_STORED_NUMBER),
            Ok(MAX_STORED_NUMBER)
        );
        assert_eq!(
            check_count("rows_done", MAX_STORED_NUMBER + 1)
                .unwrap_err()
                .0,
            "rows_done 9223372036854775808 is out of range: allowed 0 to 9223372036854775807"
        );
    }

    #[test]
    fn percentages_become_basis_points() {
        let cases = [
            ("0", 0),
            ("100", 10_000),
            ("12.5", 1_250),
            ("0.01", 1),
            ("2.50%", 250),
        ];
        for (raw, bp) in cases {
            assert_eq!(BasisPoints::from_percent(raw).unwrap().get(), bp, "{raw}");
        }
        for bad in ["", ".", "100.01", "1.234", "-1", "abc", "1e2", "1000"] {
            assert!(BasisPoints::from_percent(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn basis_points_display_as_percent() {
        let shown: Vec<String> = [0, 1, 10, 1250, 10_000]
            .into_iter()
            .map(|bp| BasisPoints::new(bp).unwrap().to_string())
            .collect();
        assert_eq!(shown, ["0%", "0.01%", "0.1%", "12.5%", "100%"]);
        assert!(BasisPoints::new(10_001).is_err());
    }
}
