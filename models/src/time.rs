//! Timestamps: microseconds since the Unix epoch, UTC, written as RFC 3339 with six fractional
//! digits and `Z` (`2012-11-12T11:04:06.593402Z`).
//!
//! A [`Timestamp`] is always within the years 0000–9999 ([`Timestamp::MIN`]..=[`Timestamp::MAX`]),
//! the range RFC 3339 can write: every constructor saturates into it. A capture or a log line
//! can claim any time at all, and a value one side writes must be one the other side reads
//! back (a year-10000 stamp once made the collector refuse a whole batch), so the range is a
//! property of the type, not a check each producer must remember. Producers that see a claimed
//! time outside it flag the message as well (e.g. the syslog parser's `timestamp_out_of_range`).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A point in time, in microseconds since 1970-01-01T00:00:00Z.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

const MICROS_PER_SEC: i64 = 1_000_000;
/// 0000-01-01T00:00:00Z in microseconds since the epoch.
const MIN_MICROS: i64 = -62_167_219_200_000_000;
/// 9999-12-31T23:59:59.999999Z in microseconds since the epoch.
const MAX_MICROS: i64 = 253_402_300_799_999_999;

impl Timestamp {
    /// The earliest representable time, 0000-01-01T00:00:00Z.
    pub const MIN: Timestamp = Timestamp(MIN_MICROS);
    /// The latest representable time, 9999-12-31T23:59:59.999999Z.
    pub const MAX: Timestamp = Timestamp(MAX_MICROS);

    /// From microseconds since the epoch, saturated into [`Timestamp::MIN`]..=[`Timestamp::MAX`].
    pub const fn from_micros(micros: i64) -> Self {
        Timestamp(clamp_micros(micros))
    }

    /// Whether `micros` since the epoch is representable as it is (not saturated).
    pub const fn in_range(micros: i64) -> bool {
        micros >= MIN_MICROS && micros <= MAX_MICROS
    }

    /// From whole seconds and a sub-second part in nanoseconds (truncated to microseconds),
    /// saturated into the representable range.
    pub const fn from_secs_nanos(secs: i64, nanos: u32) -> Self {
        Timestamp::from_micros(
            secs.saturating_mul(MICROS_PER_SEC)
                .saturating_add((nanos / 1000) as i64),
        )
    }

    /// From a `SystemTime` (a wall-clock reading the caller took; this crate reads no clock).
    pub fn from_system_time(t: std::time::SystemTime) -> Self {
        match t.duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => Timestamp::from_secs_nanos(
                i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                d.subsec_nanos(),
            ),
            Err(e) => {
                Timestamp::from_micros(-i64::try_from(e.duration().as_micros()).unwrap_or(i64::MAX))
            }
        }
    }

    pub const fn as_micros(self) -> i64 {
        self.0
    }

    pub const fn as_secs(self) -> i64 {
        self.0.div_euclid(MICROS_PER_SEC)
    }

    /// Microseconds from `earlier` to `self`, or `None` when `earlier` is later.
    pub fn micros_since(self, earlier: Timestamp) -> Option<u64> {
        u64::try_from(self.0.checked_sub(earlier.0)?).ok()
    }

    pub fn saturating_add_micros(self, micros: i64) -> Self {
        Timestamp::from_micros(self.0.saturating_add(micros))
    }

    /// Writes the RFC 3339 form into `out` (always 27 bytes: the year is 0000–9999).
    pub fn write_rfc3339(self, out: &mut String) {
        let secs = self.0.div_euclid(MICROS_PER_SEC);
        let micros = self.0.rem_euclid(MICROS_PER_SEC);
        let days = secs.div_euclid(86_400);
        let sod = secs.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        let (hh, mm, ss) = (sod / 3600, (sod / 60) % 60, sod % 60);
        // The type's range keeps `y` within 0000–9999; the clamp only guards the digits.
        let mut buf = *b"0000-00-00T00:00:00.000000Z";
        put_digits(&mut buf[0..4], y.clamp(0, 9999) as u64);
        put_digits(&mut buf[5..7], m as u64);
        put_digits(&mut buf[8..10], d as u64);
        put_digits(&mut buf[11..13], hh as u64);
        put_digits(&mut buf[14..16], mm as u64);
        put_digits(&mut buf[17..19], ss as u64);
        put_digits(&mut buf[20..26], micros as u64);
        // The buffer holds ASCII digits and separators only.
        out.push_str(std::str::from_utf8(&buf).unwrap_or("0000-00-00T00:00:00.000000Z"));
    }

    /// Parses RFC 3339 (`Z` or a numeric offset, any number of fractional digits; extra
    /// precision is truncated to microseconds). The result is in UTC.
    pub fn parse_rfc3339(s: &str) -> Option<Timestamp> {
        let b = s.as_bytes();
        if b.len() < 20 {
            return None;
        }
        let num = |r: std::ops::Range<usize>| -> Option<i64> {
            let part = b.get(r)?;
            let mut v: i64 = 0;
            for &c in part {
                if !c.is_ascii_digit() {
                    return None;
                }
                v = v * 10 + i64::from(c - b'0');
            }
            Some(v)
        };
        let sep = |i: usize, c: &[u8]| b.get(i).is_some_and(|x| c.contains(x));
        if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt ") && sep(13, b":") && sep(16, b":")) {
            return None;
        }
        let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
        let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
        if !(1..=12).contains(&mo)
            || d < 1
            || d > days_in_month(y, mo)
            || h > 23
            || mi > 59
            || se > 60
        {
            return None;
        }
        let mut i = 19;
        let mut micros: i64 = 0;
        if b.get(i) == Some(&b'.') {
            i += 1;
            let start = i;
            while let Some(&c) = b.get(i).filter(|c| c.is_ascii_digit()) {
                if i - start < 6 {
                    micros = micros * 10 + i64::from(c - b'0');
                }
                i += 1;
            }
            let n = i - start;
            if n == 0 {
                return None;
            }
            for _ in n..6 {
                micros *= 10;
            }
        }
        let offset_secs = match b.get(i)? {
            b'Z' | b'z' if i + 1 == b.len() => 0,
            sign @ (b'+' | b'-') if i + 6 == b.len() && b.get(i + 3) == Some(&b':') => {
                let (oh, om) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
                if oh > 23 || om > 59 {
                    return None;
                }
                let off = oh * 3600 + om * 60;
                if *sign == b'-' { -off } else { off }
            }
            _ => return None,
        };
        let days = days_from_civil(y, mo, d);
        let secs = days * 86_400 + h * 3600 + mi * 60 + se.min(59) - offset_secs;
        // A valid text may still fall outside the range (`0000-01-01T00:00:00+14:00`).
        Some(Timestamp::from_micros(secs * MICROS_PER_SEC + micros))
    }
}

const fn clamp_micros(micros: i64) -> i64 {
    if micros < MIN_MICROS {
        MIN_MICROS
    } else if micros > MAX_MICROS {
        MAX_MICROS
    } else {
        micros
    }
}

fn put_digits(dst: &mut [u8], mut v: u64) {
    for slot in dst.iter_mut().rev() {
        *slot = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

pub(crate) fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

pub(crate) fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(y) => 29,
        2 => 28,
        _ => 0,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The proleptic Gregorian date of a day count since 1970-01-01.
pub fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = String::with_capacity(27);
        self.write_rfc3339(&mut s);
        f.write_str(&s)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = String::with_capacity(27);
        self.write_rfc3339(&mut s);
        serializer.serialize_str(&s)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Timestamp::parse_rfc3339(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("not an RFC 3339 timestamp: {s:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn formats_like_the_contract() {
        let t = Timestamp::from_secs_nanos(1_352_718_246, 593_402_000);
        assert_eq!(t.to_string(), "2012-11-12T11:04:06.593402Z");
        assert_eq!(
            Timestamp::from_micros(0).to_string(),
            "1970-01-01T00:00:00.000000Z"
        );
        assert_eq!(
            Timestamp::from_micros(-1).to_string(),
            "1969-12-31T23:59:59.999999Z"
        );
    }

    #[test]
    fn from_system_time_before_and_after_the_epoch() {
        use std::time::{Duration, UNIX_EPOCH};
        let t = UNIX_EPOCH + Duration::new(1_352_718_246, 593_402_999);
        assert_eq!(
            Timestamp::from_system_time(t).to_string(),
            "2012-11-12T11:04:06.593402Z"
        );
        let before = UNIX_EPOCH - Duration::from_micros(1);
        assert_eq!(Timestamp::from_system_time(before).as_micros(), -1);
    }

    #[test]
    fn parses_offsets_into_utc() {
        let t = Timestamp::parse_rfc3339("2003-10-11T22:14:15.003-07:00");
        assert_eq!(
            t.map(|t| t.to_string()).as_deref(),
            Some("2003-10-12T05:14:15.003000Z")
        );
        assert_eq!(Timestamp::parse_rfc3339("2003-02-29T00:00:00Z"), None);
        assert_eq!(Timestamp::parse_rfc3339("2003-10-11T22:14:15"), None);
        assert!(Timestamp::parse_rfc3339("2003-10-11T22:14:15.123456789Z").is_some());
    }

    #[test]
    fn saturates_into_the_years_0000_to_9999() {
        assert_eq!(Timestamp::MIN.to_string(), "0000-01-01T00:00:00.000000Z");
        assert_eq!(Timestamp::MAX.to_string(), "9999-12-31T23:59:59.999999Z");
        assert_eq!(Timestamp::from_micros(i64::MAX), Timestamp::MAX);
        assert_eq!(Timestamp::from_micros(i64::MIN), Timestamp::MIN);
        assert_eq!(
            Timestamp::from_secs_nanos(i64::MAX, 999_999_999),
            Timestamp::MAX
        );
        assert_eq!(Timestamp::MAX.saturating_add_micros(1), Timestamp::MAX);
        assert!(Timestamp::in_range(0) && !Timestamp::in_range(i64::MAX));
        // Valid RFC 3339 whose UTC instant is outside the range (the poison stamps).
        assert_eq!(
            Timestamp::parse_rfc3339("9999-12-31T23:59:59-12:00"),
            Some(Timestamp::MAX)
        );
        assert_eq!(
            Timestamp::parse_rfc3339("0000-01-01T00:00:00+14:00"),
            Some(Timestamp::MIN)
        );
    }

    proptest! {
        /// Whatever the micros, what is written is read back: the contract between the agent
        /// and the collector never breaks on a timestamp.
        #[test]
        fn any_value_writes_what_parses(micros in any::<i64>()) {
            let t = Timestamp::from_micros(micros);
            let text = t.to_string();
            prop_assert_eq!(text.len(), 27);
            prop_assert_eq!(Timestamp::parse_rfc3339(&text), Some(t));
        }

        #[test]
        fn round_trips(micros in -62_135_596_800_000_000i64..253_402_300_799_999_999i64) {
            let t = Timestamp::from_micros(micros);
            prop_assert_eq!(Timestamp::parse_rfc3339(&t.to_string()), Some(t));
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,40}") {
            let _ = Timestamp::parse_rfc3339(&s);
        }
    }
}
