//! Decoding of one syslog message into a [`SyslogEvent`].
//!
//! Owns the grammar of RFC 5424 (strict and lenient), of RFC 3164 and of the BSD-format variants
//! seen on real networks: missing PRI, missing HOSTNAME, a year or a zone inside the date,
//! upper-case months, ISO 8601 stamps in a BSD header, Cisco IOS/ASA `%FAC-SEV-MNEMONIC:`
//! messages, `program(sub)[pid]:` tags, Snare/NXLog Windows events.
//!
//! Two modes:
//! - lenient (default): every input yields an event. What could not be read is flagged in
//!   `anomalies` rather than refused: for an IDS a flagged message is worth more than an error.
//!   When nothing fits, the event has format `Unknown` and the whole text as `msg`.
//! - strict: the RFC 5424 grammar only; anything RFC 5424 (or RFC 3339 as profiled by it)
//!   rejects is an error whose message says where and what was expected.
//!
//! Text fields are decoded as lossy UTF-8: bytes that are not UTF-8 are replaced (and flagged
//! `InvalidUtf8`), never dropped. Absent fields are `None`, never empty strings.

use std::borrow::Cow;
use std::collections::BTreeMap;

use mamori_models::time::{civil_from_days, days_from_civil};
use mamori_models::{Anomaly, SyslogEvent, SyslogFormat, Timestamp};
use nom::{
    IResult, Parser,
    bytes::complete::{tag, take_while_m_n},
    character::complete::{char as nom_char, digit1},
    combinator::opt,
    sequence::{delimited, preceded},
};

use super::framing::Frame;

/// Default bound on one message (RFC 5425 receivers SHOULD accept 8 KiB; real senders go higher).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// RFC 5424 §6.2.1: PRIVAL is facility * 8 + severity, facility 0..=23.
pub const MAX_PRIVAL: u16 = 191;
/// RFC 5424 §6: field length limits.
pub const HOSTNAME_MAX: usize = 255;
pub const APP_NAME_MAX: usize = 48;
pub const PROCID_MAX: usize = 128;
pub const MSGID_MAX: usize = 32;
pub const SD_NAME_MAX: usize = 32;
/// RFC 5424 TIME-SECFRAC allows 1 to 6 digits; lenient mode reads up to nanoseconds.
const SECFRAC_MAX_STRICT: usize = 6;
const SECFRAC_MAX_LENIENT: usize = 9;
/// A BSD TAG longer than this is not a tag (rsyslog accepts long tags; 128 keeps it bounded).
const TAG_MAX: usize = 128;
/// Bound on the tokens skipped before a Cisco `%FAC-SEV-MNEMONIC:` (sequence, host, stamp).
const CISCO_PREFIX_MAX: usize = 4;
const NILVALUE: &[u8] = b"-";
const BOM: &[u8] = b"\xEF\xBB\xBF";
const SP: u8 = b' ';

/// How to read a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseOptions {
    /// RFC 5424 only, rejecting what the RFC rejects. Off: lenient, always an event.
    pub strict: bool,
    /// Year for BSD dates that carry none. `None`: the year of the receive time, or the year
    /// before when the date would be more than a month in the future (a December message
    /// received in January).
    pub year: Option<i32>,
    /// Longer messages are cut to this many bytes and flagged `Truncated`.
    pub max_message_bytes: usize,
    /// What makes the first word after a BSD header a TAG (the app name).
    pub tag: TagRule,
}

impl Default for ParseOptions {
    fn default() -> Self {
        ParseOptions {
            strict: false,
            year: None,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            tag: TagRule::default(),
        }
    }
}

/// What makes the first word after a BSD header (RFC 3164's CONTENT) a TAG.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum TagRule {
    /// `tag:` only (rsyslog's `force.tagEndingByColon`, go-syslog's RFC 3164 grammar).
    Colon,
    /// A word that says it is a tag: `tag:`, `tag[pid]` (`:` or not) or a tag ended by a TAB
    /// (Snare, NXLog). A word ended by a plain space is the message's first word: in
    /// `<13>Feb  5 17:32:18 10.0.0.99 Use the BFG!` "Use" is text, not a program, and taking
    /// it for one would split one device's messages over as many app names as first words.
    #[default]
    Marked,
    /// Also a word ended by a space (RFC 3164 §4.1.3 ends the TAG at any non-alphanumeric
    /// character; rsyslog's default): for agreeing with what an rsyslog relay reports.
    Word,
}

/// The PRIORITY a relay gives a message without one (RFC 3164 §4.3.3): user.notice.
pub const MISSING_PRIVAL: u8 = 13;

/// A message rejected in strict mode.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SyslogError {
    /// The bytes do not follow RFC 5424; `offset` is where the grammar stopped matching.
    #[error("not RFC 5424 at byte {offset}: expected {expected}")]
    Rfc5424 {
        offset: usize,
        expected: &'static str,
    },
}

/// Parses one message. Lenient mode never returns an error.
pub fn parse_syslog(
    input: &[u8],
    received: Timestamp,
    opts: &ParseOptions,
) -> Result<SyslogEvent, SyslogError> {
    Ok(parse_syslog_record(input, received, opts)?.into_event(received))
}

/// A parsed message that still borrows the input: the text fields are slices of it and nothing
/// is copied until [`SyslogRecord::into_event`]. For consumers that look at a few fields of
/// many messages (filters, template mining) without paying for an owned event.
#[derive(Debug)]
pub struct SyslogRecord<'a>(Fields<'a>);

impl<'a> SyslogRecord<'a> {
    pub fn format(&self) -> SyslogFormat {
        self.0.format
    }

    pub fn priority(&self) -> Option<u8> {
        self.0.prival
    }

    pub fn severity(&self) -> Option<u8> {
        self.0.prival.map(|p| p & 7).or(self.0.severity_hint)
    }

    pub fn hostname(&self) -> Option<&[u8]> {
        self.0.hostname
    }

    pub fn app_name(&self) -> Option<&[u8]> {
        self.0.app_name.as_deref()
    }

    pub fn msg(&self) -> Option<&'a [u8]> {
        self.0.msg
    }

    pub fn anomalies(&self) -> &[Anomaly] {
        &self.0.anomalies
    }

    /// The owned event (`ts` is the message's time in UTC when its zone is known, else
    /// `received`).
    pub fn into_event(self, received: Timestamp) -> SyslogEvent {
        self.0.into_event(received)
    }
}

/// Parses one message into a [`SyslogRecord`] borrowing `input`; same rules as
/// [`parse_syslog`].
pub fn parse_syslog_record<'a>(
    input: &'a [u8],
    received: Timestamp,
    opts: &ParseOptions,
) -> Result<SyslogRecord<'a>, SyslogError> {
    let cut = input.len() > opts.max_message_bytes;
    let input = input.get(..opts.max_message_bytes).unwrap_or(input);
    let mut fields = if opts.strict {
        parse_syslog_rfc5424(input, true)?.ok_or(SyslogError::Rfc5424 {
            offset: 0,
            expected: "an RFC 5424 message",
        })?
    } else {
        parse_syslog_lenient(input, received, opts)
    };
    if cut {
        fields.anomalies.push(Anomaly::Truncated);
    }
    Ok(SyslogRecord(fields))
}

/// Whether `input` starts like a syslog message: a valid `<PRI>` followed by an RFC 5424
/// VERSION and SP, a BSD date or an RFC 3339 date. Cheap, allocation-free; for recognising
/// syslog on a flow whose port says nothing.
pub fn probe_syslog(input: &[u8]) -> bool {
    let Ok((rest, digits)) = parse_syslog_pri(input) else {
        return false;
    };
    if pri_value(digits, false).is_none() {
        return false;
    }
    if let Ok((r, _)) = parse_syslog_version(rest)
        && r.first() == Some(&SP)
    {
        return true;
    }
    let rest = skip_spaces(rest);
    parse_syslog_month(rest).is_some() || parse_syslog_rfc3339(rest).is_ok()
}

/// Parses a message cut by a framer, carrying the framer's `Truncated` verdict over.
pub fn parse_syslog_frame(
    frame: &Frame,
    received: Timestamp,
    opts: &ParseOptions,
) -> Result<SyslogEvent, SyslogError> {
    let mut ev = parse_syslog(&frame.bytes, received, opts)?;
    if frame.truncated && !ev.anomalies.contains(&Anomaly::Truncated) {
        ev.anomalies.push(Anomaly::Truncated);
        ev.anomalies.sort();
    }
    Ok(ev)
}

/// The decoded pieces, still borrowing the input.
#[derive(Debug)]
struct Fields<'a> {
    format: SyslogFormat,
    prival: Option<u8>,
    /// A severity read from the content (Cisco `%FAC-SEV-MNEMONIC`) when there was no PRI.
    severity_hint: Option<u8>,
    version: Option<u16>,
    stamp: Option<Stamp>,
    hostname: Option<&'a [u8]>,
    app_name: Option<Cow<'a, [u8]>>,
    procid: Option<&'a [u8]>,
    msgid: Option<&'a [u8]>,
    structured_data: Option<StructuredData>,
    msg: Option<&'a [u8]>,
    anomalies: Vec<Anomaly>,
}

type StructuredData = BTreeMap<String, BTreeMap<String, String>>;

/// A message timestamp: its RFC 3339 text (offset kept; none when the zone is unknown) and
/// the UTC instant when the zone is known.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    text: String,
    utc: Option<Timestamp>,
}

impl<'a> Fields<'a> {
    fn new(format: SyslogFormat) -> Self {
        Fields {
            format,
            prival: None,
            severity_hint: None,
            version: None,
            stamp: None,
            hostname: None,
            app_name: None,
            procid: None,
            msgid: None,
            structured_data: None,
            msg: None,
            anomalies: Vec::new(),
        }
    }

    #[inline]
    fn into_event(self, received: Timestamp) -> SyslogEvent {
        let mut anomalies = self.anomalies;
        let mut text = |b: Option<&[u8]>| -> Option<String> {
            let b = b.filter(|b| !b.is_empty())?;
            // The strict check is much faster than the lossy decoder on valid text.
            Some(match std::str::from_utf8(b) {
                Ok(s) => s.to_owned(),
                Err(_) => {
                    anomalies.push(Anomaly::InvalidUtf8);
                    String::from_utf8_lossy(b).into_owned()
                }
            })
        };
        let hostname = text(self.hostname);
        let app_name = text(self.app_name.as_deref());
        let procid = text(self.procid);
        let msgid = text(self.msgid);
        let msg = text(self.msg);
        let (timestamp, ts) = match self.stamp {
            Some(s) => {
                let ts = match s.utc {
                    Some(t) if plausible_stamp(t, received) => t,
                    Some(_) => {
                        anomalies.push(Anomaly::TimestampOutOfRange);
                        received
                    }
                    None => received,
                };
                (Some(s.text), ts)
            }
            None => (None, received),
        };
        // RFC 3164 §4.3.3: a relay MUST give a message without a PRI, or with one it cannot
        // read, PRIORITY 13; it stays flagged `MissingPriority`. A severity the content states
        // (Cisco `%FAC-SEV-MNEMONIC`) says more than the relay's default notice.
        let missing_pri = self.prival.is_none() && anomalies.contains(&Anomaly::MissingPriority);
        let prival = self.prival.or(missing_pri.then_some(MISSING_PRIVAL));
        let severity = match self.severity_hint {
            Some(hint) if missing_pri => Some(hint),
            hint => prival.map(|p| p & 7).or(hint),
        };
        anomalies.sort();
        anomalies.dedup();
        SyslogEvent {
            ts,
            received_ts: received,
            src_ip: None,
            src_port: None,
            format: self.format,
            priority: prival,
            facility: prival.map(|p| p >> 3),
            severity,
            version: self.version,
            timestamp,
            hostname,
            app_name,
            procid,
            msgid,
            structured_data: self.structured_data.filter(|sd| !sd.is_empty()),
            msg,
            anomalies,
        }
    }
}

/// How far after its receipt a message may claim to have been sent and still have its own time
/// used as the event's `ts` (clock drift, a zone set wrong). Beyond it the device clock is broken
/// or the message forged, and event time is the receive time: a stamp in the far future would
/// move the site's detection timers ahead of every other event.
pub const MAX_FUTURE_SKEW_SECONDS: i64 = 86_400;

/// Whether a message's own UTC time may be its event time: representable (the conversion did
/// not saturate at either end of the years 0000–9999) and not too far after `received`.
fn plausible_stamp(t: Timestamp, received: Timestamp) -> bool {
    t != Timestamp::MIN
        && t != Timestamp::MAX
        && t <= received.saturating_add_micros(MAX_FUTURE_SKEW_SECONDS * 1_000_000)
}

// ---------------------------------------------------------------------------------------------
// Primitives
// ---------------------------------------------------------------------------------------------

fn is_digit(c: u8) -> bool {
    c.is_ascii_digit()
}

/// RFC 5424 PRINTUSASCII.
fn is_printusascii(c: u8) -> bool {
    (33..=126).contains(&c)
}

/// RFC 5424 SD-NAME: PRINTUSASCII except `=`, SP, `]`, `"`.
fn is_sd_name_char(c: u8) -> bool {
    is_printusascii(c) && !matches!(c, b'=' | b']' | b'"')
}

fn digits_value(d: &[u8]) -> u32 {
    d.iter().fold(0u32, |v, &c| {
        v.saturating_mul(10)
            .saturating_add(u32::from(c.wrapping_sub(b'0')))
    })
}

fn offset_of(input: &[u8], rest: &[u8]) -> usize {
    input.len().saturating_sub(rest.len())
}

fn skip_spaces(i: &[u8]) -> &[u8] {
    let n = i.iter().take_while(|&&c| c == SP).count();
    i.get(n..).unwrap_or_default()
}

/// `<PRIVAL>`: the raw digits (1 to 3).
fn parse_syslog_pri(i: &[u8]) -> IResult<&[u8], &[u8]> {
    delimited(tag("<"), take_while_m_n(1, 3, is_digit), tag(">")).parse(i)
}

/// PRI value, or `None` when out of range (or, strictly, written with a leading zero).
fn pri_value(digits: &[u8], strict: bool) -> Option<u8> {
    if strict && digits.len() > 1 && digits.first() == Some(&b'0') {
        return None;
    }
    let v = digits_value(digits);
    u8::try_from(v).ok().filter(|&v| u16::from(v) <= MAX_PRIVAL)
}

/// RFC 5424 VERSION: NONZERO-DIGIT 0*2DIGIT.
fn parse_syslog_version(i: &[u8]) -> IResult<&[u8], u16> {
    let (rest, d) = take_while_m_n(1, 3, is_digit).parse(i)?;
    if d.first() == Some(&b'0') || rest.first().is_some_and(|c| c.is_ascii_digit()) {
        return Err(nom::Err::Error(nom::error::Error::new(
            i,
            nom::error::ErrorKind::Digit,
        )));
    }
    Ok((rest, digits_value(d) as u16))
}

fn days_in_month(y: i64, m: u32) -> u32 {
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => 0,
    }
}

// ---------------------------------------------------------------------------------------------
// RFC 3339 timestamps (RFC 5424 §6.2.3, and ISO stamps in BSD headers)
// ---------------------------------------------------------------------------------------------

/// The pieces of `FULL-DATE "T" FULL-TIME` as written.
struct Rfc3339<'a> {
    date: (&'a [u8], &'a [u8], &'a [u8]),
    sep: u8,
    time: (&'a [u8], &'a [u8], &'a [u8]),
    frac: Option<&'a [u8]>,
    /// `Z`/`z`, `+hh:mm`, or none.
    offset: Option<&'a [u8]>,
}

fn two_digits(i: &[u8]) -> IResult<&[u8], &[u8]> {
    take_while_m_n(2, 2, is_digit).parse(i)
}

fn parse_syslog_offset(i: &[u8]) -> IResult<&[u8], &[u8]> {
    if let Some(b'Z' | b'z') = i.first() {
        return Ok((
            i.get(1..).unwrap_or_default(),
            i.get(..1).unwrap_or_default(),
        ));
    }
    let (rest, _) = (
        nom::character::complete::one_of("+-"),
        two_digits,
        nom_char(':'),
        two_digits,
    )
        .parse(i)?;
    Ok((rest, i.get(..offset_of(i, rest)).unwrap_or_default()))
}

fn parse_syslog_rfc3339(i: &[u8]) -> IResult<&[u8], Rfc3339<'_>> {
    // FULL-DATE "T" PARTIAL-TIME up to the seconds is fixed-width: one pass over a shape is
    // much cheaper than a chain of combinators on the hot path of every RFC 5424 message.
    const SHAPE: &[u8; 19] = b"dddd-dd-ddTdd:dd:dd";
    let fail = || nom::Err::Error(nom::error::Error::new(i, nom::error::ErrorKind::Verify));
    let (head, rest) = i.split_at_checked(SHAPE.len()).ok_or_else(fail)?;
    let fits = head.iter().zip(SHAPE).all(|(&c, &s)| match s {
        b'd' => c.is_ascii_digit(),
        // RFC 3339 §5.6 allows `t` and, by its note, a space; strict mode checks for `T`.
        b'T' => matches!(c, b'T' | b't' | b' '),
        _ => c == s,
    });
    if !fits {
        return Err(fail());
    }
    let part = |a: usize, b: usize| head.get(a..b).unwrap_or_default();
    let (y, mo, d) = (part(0, 4), part(5, 7), part(8, 10));
    let sep = head.get(10).copied().unwrap_or(b'T');
    let (h, mi, s) = (part(11, 13), part(14, 16), part(17, 19));
    let (rest, frac) = opt(preceded(nom_char('.'), digit1)).parse(rest)?;
    let (rest, offset) = opt(parse_syslog_offset).parse(rest)?;
    Ok((
        rest,
        Rfc3339 {
            date: (y, mo, d),
            sep,
            time: (h, mi, s),
            frac,
            offset,
        },
    ))
}

/// Checks an RFC 3339 stamp. `strict` applies RFC 5424's profile: upper-case `T` and `Z`,
/// at most 6 fractional digits, an offset present, no leap second.
fn check_rfc3339(t: &Rfc3339<'_>, strict: bool) -> bool {
    let (y, mo, d) = (
        digits_value(t.date.0),
        digits_value(t.date.1),
        digits_value(t.date.2),
    );
    let (h, mi, s) = (
        digits_value(t.time.0),
        digits_value(t.time.1),
        digits_value(t.time.2),
    );
    let frac_max = if strict {
        SECFRAC_MAX_STRICT
    } else {
        SECFRAC_MAX_LENIENT
    };
    let offset_ok = match t.offset {
        None => !strict,
        Some(o) if o.len() == 1 => !strict || o == b"Z",
        Some(o) => {
            let oh = digits_value(o.get(1..3).unwrap_or_default());
            let om = digits_value(o.get(4..6).unwrap_or_default());
            oh <= 23 && om <= 59
        }
    };
    (1..=12).contains(&mo)
        && d >= 1
        && d <= days_in_month(i64::from(y), mo)
        && h <= 23
        && mi <= 59
        && s <= if strict { 59 } else { 60 }
        && t.frac.is_none_or(|f| f.len() <= frac_max)
        && (!strict || t.sep == b'T')
        && offset_ok
}

/// The stamp of a checked RFC 3339 date-time; the instant only when it has an offset.
fn rfc3339_stamp(text: &[u8], t: &Rfc3339<'_>) -> Stamp {
    // The grammar admits ASCII only, so the strict conversion cannot fail.
    let mut text = std::str::from_utf8(text).map_or_else(
        |_| String::from_utf8_lossy(text).into_owned(),
        str::to_owned,
    );
    // `2024-01-05 10:00:00` (RFC 3339 §5.6 note) is written with the `T` of the profile.
    if t.sep == SP && text.get(10..11).is_some() {
        text.replace_range(10..11, "T");
    }
    let utc = t.offset.map(|o| {
        let off = match (o.first(), o.get(1..3), o.get(4..6)) {
            (Some(&sign), Some(h), Some(m)) => {
                let v = i64::from(digits_value(h) * 3600 + digits_value(m) * 60);
                if sign == b'-' { -v } else { v }
            }
            _ => 0,
        };
        let day = days_from_civil(
            i64::from(digits_value(t.date.0)),
            i64::from(digits_value(t.date.1)),
            i64::from(digits_value(t.date.2)),
        );
        let sod = i64::from(
            digits_value(t.time.0) * 3600
                + digits_value(t.time.1) * 60
                + digits_value(t.time.2).min(59),
        );
        Timestamp::from_secs_nanos(day * 86_400 + sod - off, frac_nanos(t.frac))
    });
    Stamp { text, utc }
}

/// Fractional seconds as nanoseconds (digits beyond microseconds are dropped: the model keeps
/// microseconds).
fn frac_nanos(frac: Option<&[u8]>) -> u32 {
    let Some(f) = frac else { return 0 };
    let f = f.get(..6).unwrap_or(f);
    let scale = 10u32.pow(6u32.saturating_sub(f.len() as u32));
    digits_value(f).saturating_mul(scale).saturating_mul(1000)
}

/// Appends `v` as `width` decimal digits (zero-padded).
fn push_digits(out: &mut String, v: u32, width: u32) {
    for k in (0..width).rev() {
        let d = (v / 10u32.pow(k)) % 10;
        out.push(char::from(b'0' + d as u8));
    }
}

// ---------------------------------------------------------------------------------------------
// RFC 5424
// ---------------------------------------------------------------------------------------------

fn err(input: &[u8], rest: &[u8], expected: &'static str) -> SyslogError {
    SyslogError::Rfc5424 {
        offset: offset_of(input, rest),
        expected,
    }
}

/// One header field: NILVALUE or 1..=max PRINTUSASCII, then SP. Strict.
fn header_field<'a>(
    input: &'a [u8],
    i: &'a [u8],
    max: usize,
    expected: &'static str,
) -> Result<(&'a [u8], Option<&'a [u8]>), SyslogError> {
    let n = i.iter().take_while(|&&c| is_printusascii(c)).count();
    if n == 0 || n > max {
        return Err(err(input, i, expected));
    }
    let (value, rest) = i.split_at_checked(n).unwrap_or((i, &[]));
    let rest = match rest.first() {
        Some(&SP) => rest.get(1..).unwrap_or_default(),
        _ => return Err(err(input, rest, "SP after a header field")),
    };
    Ok((rest, if value == NILVALUE { None } else { Some(value) }))
}

/// One header field, leniently: any run of non-SP bytes; runs of SP separate.
fn header_field_lenient(i: &[u8]) -> (&[u8], Option<&[u8]>) {
    let n = i.iter().take_while(|&&c| c != SP).count();
    let (value, rest) = i.split_at_checked(n).unwrap_or((i, &[]));
    let rest = skip_spaces(rest);
    if value.is_empty() || value == NILVALUE {
        (rest, None)
    } else {
        (rest, Some(value))
    }
}

/// RFC 5424 §6.3: `[SD-ID *(SP PARAM-NAME="PARAM-VALUE")]`. Returns the element, or the
/// offset (within `i`) where it went wrong and what was expected there.
#[allow(clippy::type_complexity)]
fn parse_syslog_sd_element(
    i: &[u8],
    strict: bool,
) -> Result<(&[u8], (String, Vec<(String, String)>)), (usize, &'static str)> {
    let at = |rest: &[u8]| offset_of(i, rest);
    let Some(rest) = i.strip_prefix(b"[") else {
        return Err((0, "'[' opening an SD-ELEMENT"));
    };
    let n = rest.iter().take_while(|&&c| is_sd_name_char(c)).count();
    if n == 0 || n > SD_NAME_MAX {
        return Err((
            at(rest),
            "an SD-ID (1 to 32 PRINTUSASCII except '=', SP, ']', '\"')",
        ));
    }
    let (id, mut rest) = rest.split_at_checked(n).unwrap_or((rest, &[]));
    let mut params = Vec::new();
    loop {
        match rest.first() {
            Some(b']') => {
                let id = String::from_utf8_lossy(id).into_owned();
                return Ok((rest.get(1..).unwrap_or_default(), (id, params)));
            }
            Some(&SP) => {}
            _ => return Err((at(rest), "SP or ']' in an SD-ELEMENT")),
        }
        rest = if strict {
            rest.get(1..).unwrap_or_default()
        } else {
            skip_spaces(rest)
        };
        if !strict && rest.first() == Some(&b']') {
            continue;
        }
        let n = rest.iter().take_while(|&&c| is_sd_name_char(c)).count();
        if n == 0 || n > SD_NAME_MAX {
            return Err((
                at(rest),
                "a PARAM-NAME (1 to 32 PRINTUSASCII except '=', SP, ']', '\"')",
            ));
        }
        let (name, after) = rest.split_at_checked(n).unwrap_or((rest, &[]));
        rest = after;
        if !strict {
            rest = skip_spaces(rest);
        }
        rest = rest
            .strip_prefix(b"=")
            .ok_or((at(rest), "'=' after a PARAM-NAME"))?;
        if !strict {
            rest = skip_spaces(rest);
        }
        rest = rest
            .strip_prefix(b"\"")
            .ok_or((at(rest), "'\"' opening a PARAM-VALUE"))?;
        // PARAM-VALUE: `"`, `\` and `]` MUST be escaped. An escape of any other character is
        // "invalid" (§6.3.3): strict mode rejects it, lenient mode keeps it literally as the
        // RFC asks receivers to.
        // Copy runs of plain bytes at once; stop only on the three special characters.
        let mut value = Vec::new();
        let mut k = 0;
        let end = loop {
            let Some(p) = rest
                .get(k..)
                .and_then(|r| r.iter().position(|&c| matches!(c, b'"' | b'\\' | b']')))
            else {
                return Err((i.len(), "'\"' closing a PARAM-VALUE"));
            };
            value.extend_from_slice(rest.get(k..k + p).unwrap_or_default());
            k += p;
            match rest.get(k) {
                Some(b'"') => break k,
                Some(b'\\') => match rest.get(k + 1) {
                    Some(&e @ (b'"' | b'\\' | b']')) => {
                        value.push(e);
                        k += 2;
                    }
                    _ if strict => {
                        return Err((
                            at(rest) + k,
                            "'\"', '\\' or ']' after '\\' in a PARAM-VALUE",
                        ));
                    }
                    _ => {
                        value.push(b'\\');
                        k += 1;
                    }
                },
                _ if strict => {
                    return Err((at(rest) + k, "']' escaped as '\\]' in a PARAM-VALUE"));
                }
                _ => {
                    value.push(b']');
                    k += 1;
                }
            }
        };
        rest = rest.get(end + 1..).unwrap_or_default();
        if strict && std::str::from_utf8(&value).is_err() {
            return Err((at(rest), "a UTF-8 PARAM-VALUE"));
        }
        params.push((
            String::from_utf8_lossy(name).into_owned(),
            String::from_utf8_lossy(&value).into_owned(),
        ));
    }
}

/// One or more SD-ELEMENTs. Strict: a repeated SD-ID is an error (§6.3.2). Lenient: the
/// params of a repeated SD-ID are merged.
fn parse_syslog_sd(
    i: &[u8],
    strict: bool,
) -> Result<(&[u8], StructuredData), (usize, &'static str)> {
    let mut sd = StructuredData::new();
    let mut rest = i;
    while rest.first() == Some(&b'[') {
        let before = rest;
        let (after, (id, params)) = parse_syslog_sd_element(rest, strict)
            .map_err(|(o, e)| (offset_of(i, before) + o, e))?;
        if strict && sd.contains_key(&id) {
            return Err((
                offset_of(i, before),
                "SD-IDs that appear only once (RFC 5424 section 6.3.2)",
            ));
        }
        sd.entry(id).or_default().extend(params);
        rest = after;
    }
    Ok((rest, sd))
}

/// Parses an RFC 5424 message. Strict: `Err` on any deviation. Lenient: `Ok(None)` when the
/// input is not RFC 5424 at all (no VERSION and TIMESTAMP), else the fields with what could
/// be read and `Malformed` for the rest.
fn parse_syslog_rfc5424(input: &[u8], strict: bool) -> Result<Option<Fields<'_>>, SyslogError> {
    let mut f = Fields::new(SyslogFormat::Rfc5424);
    let mut i = input;
    match parse_syslog_pri(i) {
        Ok((rest, digits)) => match pri_value(digits, strict) {
            Some(p) => {
                f.prival = Some(p);
                i = rest;
            }
            None if strict => return Err(err(input, i, "PRI '<' 0-191 '>'")),
            None => return Ok(None),
        },
        Err(_) if strict => return Err(err(input, i, "PRI '<' 0-191 '>'")),
        Err(_) => f.anomalies.push(Anomaly::MissingPriority),
    }
    let Ok((rest, version)) = parse_syslog_version(i) else {
        return if strict {
            Err(err(input, i, "VERSION 1-999"))
        } else {
            Ok(None)
        };
    };
    f.version = Some(version);
    i = match rest.first() {
        Some(&SP) => rest.get(1..).unwrap_or_default(),
        _ if strict => return Err(err(input, rest, "SP after VERSION")),
        _ => return Ok(None),
    };
    // TIMESTAMP
    if let Some(rest) = i
        .strip_prefix(NILVALUE)
        .filter(|r| r.first() == Some(&SP) || r.is_empty())
    {
        i = rest;
    } else {
        match parse_syslog_rfc3339(i) {
            Ok((rest, t)) if rest.first() == Some(&SP) || (!strict && rest.is_empty()) => {
                let text = i.get(..offset_of(i, rest)).unwrap_or_default();
                if check_rfc3339(&t, strict) {
                    f.stamp = Some(rfc3339_stamp(text, &t));
                } else if strict {
                    let expected = if t.frac.is_some_and(|f| f.len() > SECFRAC_MAX_STRICT) {
                        "TIME-SECFRAC of 1 to 6 digits (RFC 5424 section 6.2.3)"
                    } else {
                        "a valid RFC 3339 TIMESTAMP (RFC 5424 profile: upper-case T and Z, an offset, a date that exists)"
                    };
                    return Err(err(input, i, expected));
                } else {
                    f.anomalies.push(Anomaly::InvalidTimestamp);
                }
                i = rest;
            }
            _ if strict => return Err(err(input, i, "TIMESTAMP (RFC 3339 date-time) or '-'")),
            _ => return Ok(None),
        }
    }
    if strict {
        i = match i.first() {
            Some(&SP) => i.get(1..).unwrap_or_default(),
            _ => return Err(err(input, i, "SP after TIMESTAMP")),
        };
        let (r, v) = header_field(
            input,
            i,
            HOSTNAME_MAX,
            "HOSTNAME (1-255 PRINTUSASCII) or '-'",
        )?;
        f.hostname = v;
        let (r, v) = header_field(
            input,
            r,
            APP_NAME_MAX,
            "APP-NAME (1-48 PRINTUSASCII) or '-'",
        )?;
        f.app_name = v.map(Cow::Borrowed);
        let (r, v) = header_field(input, r, PROCID_MAX, "PROCID (1-128 PRINTUSASCII) or '-'")?;
        f.procid = v;
        let (r, v) = header_field(input, r, MSGID_MAX, "MSGID (1-32 PRINTUSASCII) or '-'")?;
        f.msgid = v;
        i = r;
        // STRUCTURED-DATA
        if let Some(rest) = i.strip_prefix(NILVALUE) {
            i = rest;
        } else if i.first() == Some(&b'[') {
            let (rest, sd) = parse_syslog_sd(i, true).map_err(|(o, e)| SyslogError::Rfc5424 {
                offset: offset_of(input, i) + o,
                expected: e,
            })?;
            f.structured_data = Some(sd);
            i = rest;
        } else {
            return Err(err(input, i, "STRUCTURED-DATA ('[' or '-')"));
        }
        // MSG: exactly one SP separates it from STRUCTURED-DATA; further SPs belong to MSG.
        match i.first() {
            None => {}
            Some(&SP) => {
                let msg = i.get(1..).unwrap_or_default();
                if let Some(body) = msg.strip_prefix(BOM)
                    && std::str::from_utf8(body).is_err()
                {
                    return Err(err(input, msg, "UTF-8 after the BOM that starts MSG"));
                }
                f.msg = Some(msg);
            }
            Some(_) => return Err(err(input, i, "SP or end of message after STRUCTURED-DATA")),
        }
        return Ok(Some(f));
    }
    // Lenient header: fields separated by runs of SP, any bytes, missing ones left `None`.
    i = skip_spaces(i);
    let (r, host) = header_field_lenient(i);
    let (r, app) = header_field_lenient(r);
    let (r, procid) = header_field_lenient(r);
    let (r, msgid) = header_field_lenient(r);
    f.hostname = host;
    f.app_name = app.map(Cow::Borrowed);
    f.procid = procid;
    f.msgid = msgid;
    if r.is_empty() {
        // The message ends inside the header: STRUCTURED-DATA (at least `-`) is missing.
        f.anomalies.push(Anomaly::Malformed);
    }
    i = r;
    if let Some(rest) = i
        .strip_prefix(NILVALUE)
        .filter(|r| r.first() == Some(&SP) || r.is_empty())
    {
        i = rest;
    } else if i.first() == Some(&b'[') {
        match parse_syslog_sd(i, false) {
            Ok((rest, sd)) if rest.is_empty() || rest.first() == Some(&SP) => {
                f.structured_data = Some(sd);
                i = rest;
            }
            _ => {
                // Drop what cannot be read up to the `]` that ends the SD block, keep the rest.
                f.anomalies.push(Anomaly::Malformed);
                i = skip_bad_sd(i);
            }
        }
    } else if !i.is_empty() {
        // No STRUCTURED-DATA field at all: what follows MSGID is the message.
        f.anomalies.push(Anomaly::Malformed);
        f.msg = Some(i);
        return Ok(Some(f));
    }
    f.msg = i.strip_prefix(b" ").or(Some(i)).filter(|m| !m.is_empty());
    if let Some(body) = f.msg.and_then(|m| m.strip_prefix(BOM))
        && std::str::from_utf8(body).is_err()
    {
        f.anomalies.push(Anomaly::Malformed);
    }
    Ok(Some(f))
}

/// Skips a malformed SD block: up to the first `]` followed by SP or the end.
fn skip_bad_sd(i: &[u8]) -> &[u8] {
    let mut k = 0;
    while let Some(p) = i.get(k..).and_then(|r| r.iter().position(|&c| c == b']')) {
        let end = k + p + 1;
        match i.get(end) {
            None | Some(&SP) => return i.get(end..).unwrap_or_default(),
            _ => k = end,
        }
    }
    i
}

// ---------------------------------------------------------------------------------------------
// BSD (RFC 3164) timestamps
// ---------------------------------------------------------------------------------------------

const MONTHS: [&[u8; 3]; 12] = [
    b"jan", b"feb", b"mar", b"apr", b"may", b"jun", b"jul", b"aug", b"sep", b"oct", b"nov", b"dec",
];

fn parse_syslog_month(i: &[u8]) -> Option<(&[u8], u32)> {
    let (m, rest) = i.split_at_checked(3)?;
    let lower = [
        m.first()?.to_ascii_lowercase(),
        m.get(1)?.to_ascii_lowercase(),
        m.get(2)?.to_ascii_lowercase(),
    ];
    let idx = MONTHS.iter().position(|x| **x == lower)?;
    // "Mar" must not be the start of a longer word ("March" is not a BSD stamp).
    if rest.first().is_some_and(|c| c.is_ascii_alphabetic()) {
        return None;
    }
    Some((rest, idx as u32 + 1))
}

/// A BSD date as written: `Mmm dd [yyyy] hh:mm:ss[.fff] [TZ:]`.
#[derive(Debug, Clone, Copy)]
struct BsdDate<'a> {
    year: Option<i32>,
    month: u32,
    day: u32,
    hms: (u32, u32, u32),
    frac: Option<&'a [u8]>,
    /// Offset in seconds east of UTC, when the zone was given and is known.
    offset: Option<i32>,
}

fn take_digits(i: &[u8], min: usize, max: usize) -> Option<(&[u8], u32)> {
    let n = i.iter().take_while(|c| c.is_ascii_digit()).count();
    if n < min || n > max {
        return None;
    }
    let (d, rest) = i.split_at_checked(n)?;
    Some((rest, digits_value(d)))
}

type Hms = (u32, u32, u32);

fn parse_syslog_hms(i: &[u8]) -> Option<(&[u8], Hms)> {
    let (i, h) = take_digits(i, 2, 2)?;
    let i = i.strip_prefix(b":")?;
    let (i, m) = take_digits(i, 2, 2)?;
    let i = i.strip_prefix(b":")?;
    let (i, s) = take_digits(i, 2, 2)?;
    // Ranges are checked when the stamp is built: an impossible time is still a time field
    // (flagged), not the HOSTNAME.
    Some((i, (h, m, s)))
}

/// Zone after a BSD time: `UTC`/`GMT`/`Z` (known), numeric `±hh[:]mm` (known) or another
/// upper-case abbreviation (unknown: abbreviations are ambiguous). Only read when followed by
/// `:` — otherwise the word is the HOSTNAME.
fn parse_syslog_zone(i: &[u8]) -> Option<(&[u8], Option<i32>)> {
    let i = i.strip_prefix(b" ")?;
    // A numeric offset (`+01:00`, `-0500`): no HOSTNAME starts with a sign.
    if let Some((o, rest)) = parse_numeric_offset(i) {
        return (rest.is_empty() || rest.first() == Some(&b':') || rest.first() == Some(&SP))
            .then_some((rest, Some(o)));
    }
    let n = i.iter().take_while(|&&c| c != b':' && c != SP).count();
    let (z, rest) = i.split_at_checked(n)?;
    if rest.first() != Some(&b':') {
        return None;
    }
    if matches!(z, b"UTC" | b"GMT" | b"Z" | b"UT") {
        return Some((rest, Some(0)));
    }
    ((2..=5).contains(&z.len()) && z.iter().all(u8::is_ascii_uppercase)).then_some((rest, None))
}

fn parse_numeric_offset(i: &[u8]) -> Option<(i32, &[u8])> {
    let (&sign, i) = i.split_first()?;
    if sign != b'+' && sign != b'-' {
        return None;
    }
    let (i, h) = take_digits(i, 2, 2)?;
    let i = i.strip_prefix(b":").unwrap_or(i);
    let (i, m) = take_digits(i, 2, 2)?;
    if h > 23 || m > 59 {
        return None;
    }
    let off = (h * 3600 + m * 60) as i32;
    Some((if sign == b'-' { -off } else { off }, i))
}

fn parse_syslog_bsd_date(i: &[u8]) -> Option<(&[u8], BsdDate<'_>)> {
    let (i, month) = parse_syslog_month(i)?;
    let i = i.strip_prefix(b" ")?;
    let i = skip_spaces(i);
    let (i, day) = take_digits(i, 1, 2)?;
    let i = i.strip_prefix(b" ")?;
    let i = skip_spaces(i);
    // A year inside the date (`Mar  7 2008 19:06:53`), as some devices write it.
    let (i, year) = match take_digits(i, 4, 4) {
        Some((r, y)) if r.first() == Some(&SP) => (skip_spaces(r), Some(y as i32)),
        _ => (i, None),
    };
    let (mut i, hms) = parse_syslog_hms(i)?;
    let mut frac = None;
    if let Some(r) = i.strip_prefix(b".") {
        let n = r
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count()
            .min(SECFRAC_MAX_LENIENT);
        if n > 0 {
            frac = r.get(..n);
            i = r.get(n..).unwrap_or_default();
        }
    }
    let mut offset = None;
    if let Some((r, o)) = parse_syslog_zone(i) {
        offset = o;
        i = r;
    }
    Some((
        i,
        BsdDate {
            year,
            month,
            day,
            hms,
            frac,
            offset,
        },
    ))
}

/// The year of a BSD date without one, from the receive time: a date more than a month ahead
/// of it was written last year (a December message read in January).
fn infer_year(month: u32, received: Timestamp) -> i32 {
    let days = received.as_secs().div_euclid(86_400);
    let (y, m, _) = civil_from_days(days);
    let (y, m) = (y as i32, m as u32);
    if month > m + 1 {
        y - 1
    } else if m == 12 && month == 1 {
        y + 1
    } else {
        y
    }
}

/// Renders a BSD date as RFC 3339 and resolves its instant; `None` for a date that does not
/// exist (February 29 of a common year, April 31).
fn bsd_stamp(d: &BsdDate<'_>, year: i32) -> Option<Stamp> {
    let (hh, mm, ss) = d.hms;
    if d.day == 0
        || d.day > days_in_month(i64::from(year), d.month)
        || hh > 23
        || mm > 59
        || ss > 60
    {
        return None;
    }
    let (h, mi, s) = d.hms;
    // `YYYY-MM-DDThh:mm:ss[.f][Z|+hh:mm]`, written digit by digit (format! is slow here).
    let mut text = String::with_capacity(36);
    if (0..=9999).contains(&year) {
        push_digits(&mut text, year as u32, 4);
    } else {
        text.push_str(&year.to_string());
    }
    for (sep, v) in [('-', d.month), ('-', d.day), ('T', h), (':', mi), (':', s)] {
        text.push(sep);
        push_digits(&mut text, v, 2);
    }
    if let Some(f) = d.frac {
        text.push('.');
        text.extend(f.iter().map(|&c| char::from(c)));
    }
    let utc = d.offset.map(|off| {
        let days = days_from_civil(i64::from(year), i64::from(d.month), i64::from(d.day));
        let secs = days * 86_400 + i64::from(h * 3600 + mi * 60 + s.min(59)) - i64::from(off);
        Timestamp::from_secs_nanos(secs, frac_nanos(d.frac))
    });
    match d.offset {
        Some(0) => text.push('Z'),
        Some(off) => {
            text.push(if off < 0 { '-' } else { '+' });
            let a = off.unsigned_abs();
            push_digits(&mut text, a / 3600, 2);
            text.push(':');
            push_digits(&mut text, (a / 60) % 60, 2);
        }
        None => {}
    }
    Some(Stamp { text, utc })
}

// ---------------------------------------------------------------------------------------------
// Lenient: RFC 5424, then BSD
// ---------------------------------------------------------------------------------------------

#[inline]
fn parse_syslog_lenient<'a>(
    input: &'a [u8],
    received: Timestamp,
    opts: &ParseOptions,
) -> Fields<'a> {
    if let Ok(Some(f)) = parse_syslog_rfc5424(input, false) {
        return f;
    }
    parse_syslog_rfc3164(input, received, opts)
}

/// The BSD format, RFC 3164 §4.1, read as rsyslog's `pmrfc3164` does, plus the variants in the
/// module doc.
fn parse_syslog_rfc3164<'a>(
    input: &'a [u8],
    received: Timestamp,
    opts: &ParseOptions,
) -> Fields<'a> {
    let mut f = Fields::new(SyslogFormat::Rfc3164);
    let mut i = input;
    match parse_syslog_pri(i) {
        Ok((rest, digits)) if pri_value(digits, false).is_some() => {
            f.prival = pri_value(digits, false);
            i = rest;
        }
        _ => f.anomalies.push(Anomaly::MissingPriority),
    }
    let has_pri = f.prival.is_some();
    // Some senders put a space between PRI and the date.
    i = skip_spaces(i);

    // TIMESTAMP: BSD, or RFC 3339 in a BSD header (rsyslog's high-precision forwarding format).
    let mut have_stamp = false;
    if let Some((rest, d)) = parse_syslog_bsd_date(i) {
        let year = d
            .year
            .or(opts.year)
            .unwrap_or_else(|| infer_year(d.month, received));
        match bsd_stamp(&d, year) {
            Some(s) => f.stamp = Some(s),
            None => f.anomalies.push(Anomaly::InvalidTimestamp),
        }
        // rsyslog accepts `hh:mm:ss:` (a colon after the time).
        i = rest.strip_prefix(b":").unwrap_or(rest);
        have_stamp = true;
    } else if let Ok((rest, t)) = parse_syslog_rfc3339(i)
        && (rest.is_empty() || rest.first() == Some(&SP))
    {
        let text = i.get(..offset_of(i, rest)).unwrap_or_default();
        if check_rfc3339(&t, false) {
            f.stamp = Some(rfc3339_stamp(text, &t));
        } else {
            f.anomalies.push(Anomaly::InvalidTimestamp);
        }
        i = rest;
        have_stamp = true;
    }

    if !have_stamp {
        if !has_pri {
            // Neither PRI nor a date: nothing says this is syslog. Keep the text whole.
            let mut f = Fields::new(SyslogFormat::Unknown);
            f.anomalies.push(Anomaly::MissingPriority);
            f.msg = Some(input);
            return f;
        }
        // `<PRI>last message repeated N times` (syslogd's own line, rsyslog's pmlastmsg).
        if is_last_message_repeated(i) {
            f.msg = Some(i);
            return f;
        }
        f.anomalies.push(Anomaly::Malformed);
    }
    i = skip_spaces(i);

    // HOSTNAME: optional; a word is taken as HOSTNAME when it looks like one and is followed by
    // SP or the end (rsyslog's test). `tag:` or `app[pid]:` therefore starts the TAG instead.
    let n = i.iter().take_while(|&&c| c != SP).count();
    if let Some((word, rest)) = i.split_at_checked(n)
        && looks_like_hostname(word)
    {
        f.hostname = Some(word);
        i = rest.get(1..).unwrap_or_default();
    }

    if let Some(c) = parse_syslog_cisco(i) {
        // IOS without a BSD header (`<189>123: *Mar  1 00:03:20.123: %LINK-3-UPDOWN: ...`) is
        // IOS's own format, not a malformed BSD message.
        if c.date.is_some() {
            f.anomalies.retain(|a| *a != Anomaly::Malformed);
        }
        if f.hostname.is_none() {
            f.hostname = c.host;
        }
        if let Some(d) = c.date {
            let year = d
                .year
                .or(opts.year)
                .unwrap_or_else(|| infer_year(d.month, received));
            if let Some(s) = bsd_stamp(&d, year) {
                f.stamp = Some(s);
            }
        }
        f.app_name = Some(Cow::Borrowed(c.tag));
        f.msgid = Some(c.mnemonic);
        f.severity_hint = Some(c.severity);
        f.msg = Some(c.msg).filter(|m| !m.is_empty());
        return f;
    }

    // TAG: up to `:`, whitespace or a `#011` (an escaped TAB, Snare over a relay); the program
    // name is the TAG up to `[`, the PROCID what is inside `[...]`.
    let tag_len = i
        .iter()
        .enumerate()
        .position(|(k, &c)| {
            matches!(c, b':' | SP | b'\t')
                || (c == b'#' && i.get(k + 1..k + 4) == Some(b"011".as_slice()))
        })
        .unwrap_or(i.len());
    let (word, after) = i.split_at_checked(tag_len).unwrap_or((i, &[]));
    let colon = after.first() == Some(&b':');
    let is_tag = (!word.is_empty() || colon)
        && word.len() <= TAG_MAX
        && match opts.tag {
            TagRule::Colon => colon,
            TagRule::Marked => {
                colon
                    || ends_with_pid(word)
                    || after.starts_with(b"\t")
                    || after.starts_with(b"#011")
            }
            TagRule::Word => true,
        };
    if is_tag {
        let (app, pid) = split_tag(word);
        f.app_name = app.map(Cow::Borrowed);
        f.procid = pid;
        let mut rest = if colon {
            after.get(1..).unwrap_or_default()
        } else {
            after
        };
        // One separator after the TAG; further spaces belong to MSG.
        rest = if let Some(r) = rest.strip_prefix(b"#011") {
            r
        } else {
            match rest.first() {
                Some(&SP | &b'\t') => rest.get(1..).unwrap_or_default(),
                _ => rest,
            }
        };
        // RFC 5424-style STRUCTURED-DATA right after the TAG (rsyslog forwarding templates).
        let trimmed = skip_spaces(rest);
        // At least one PARAM is required: a bare `[error]` or `[UFW BLOCK]` is text.
        if trimmed.first() == Some(&b'[')
            && let Ok((r, sd)) = parse_syslog_sd(trimmed, false)
            && sd.values().any(|p| !p.is_empty())
            && (r.is_empty() || r.first() == Some(&SP))
        {
            f.structured_data = Some(sd);
            rest = skip_spaces(r);
        }
        f.msg = Some(rest).filter(|m| !m.is_empty());
    } else {
        f.msg = Some(i).filter(|m| !m.is_empty());
    }
    f
}

/// `name[pid]` → (name, pid); `name` → (name, none).
fn split_tag(word: &[u8]) -> (Option<&[u8]>, Option<&[u8]>) {
    let Some(open) = word.iter().position(|&c| c == b'[') else {
        return (Some(word).filter(|w| !w.is_empty()), None);
    };
    let (name, bracket) = word.split_at_checked(open).unwrap_or((word, &[]));
    let pid = bracket
        .strip_prefix(b"[")
        .and_then(|b| b.strip_suffix(b"]"))
        .filter(|p| !p.is_empty() && !p.contains(&b'[') && !p.contains(&b']'));
    match pid {
        Some(p) => (Some(name).filter(|n| !n.is_empty()), Some(p)),
        None => (Some(word), None),
    }
}

/// `name[pid]`: a PROCID in brackets marks a TAG even without the `:`.
fn ends_with_pid(word: &[u8]) -> bool {
    matches!(split_tag(word), (Some(_), Some(_)))
}

/// rsyslog's HOSTNAME test: letters, digits, `.`, `_`, `-` (and `@`, seen in relayed names),
/// ending with a letter or digit; or an IPv6 address. Letters and digits of any script count
/// (an internationalised name in UTF-8, `müller-rtu`), as RFC 3164 §4.1.2 leaves HOSTNAME's
/// characters open and senders write names as their operators typed them.
fn looks_like_hostname(w: &[u8]) -> bool {
    if w.is_empty() || w.len() > HOSTNAME_MAX {
        return false;
    }
    if w.is_ascii() {
        if !w.last().is_some_and(u8::is_ascii_alphanumeric) {
            return false;
        }
    } else {
        let Ok(text) = std::str::from_utf8(w) else {
            return false;
        };
        return text.chars().last().is_some_and(char::is_alphanumeric)
            && text
                .chars()
                .all(|c| c.is_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    }
    let plain = w
        .iter()
        .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-' | b'@'));
    let ipv6 = w.iter().filter(|&&c| c == b':').count() >= 2
        && w.iter()
            .all(|&c| c.is_ascii_hexdigit() || matches!(c, b':' | b'.'));
    plain || ipv6
}

fn is_last_message_repeated(i: &[u8]) -> bool {
    let Some(r) = i.strip_prefix(b"last message repeated ") else {
        return false;
    };
    let n = r.iter().take_while(|c| c.is_ascii_digit()).count();
    n > 0 && r.get(n..) == Some(b" times".as_slice())
}

/// A Cisco IOS / ASA message: `[seq: ][host: ][seq: ][*]Mmm dd hh:mm:ss[.mmm] [TZ]: ]%FAC-SEV-MNEMONIC: text`.
struct Cisco<'a> {
    host: Option<&'a [u8]>,
    date: Option<BsdDate<'a>>,
    /// `%FAC-SEV-MNEMONIC` as written.
    tag: &'a [u8],
    severity: u8,
    mnemonic: &'a [u8],
    msg: &'a [u8],
}

fn parse_syslog_cisco(mut i: &[u8]) -> Option<Cisco<'_>> {
    let mut host = None;
    let mut date = None;
    for _ in 0..=CISCO_PREFIX_MAX {
        if i.first() == Some(&b'%') {
            let n = i.iter().take_while(|&&c| c != b':' && c != SP).count();
            let (tag, rest) = i.split_at_checked(n)?;
            let rest = rest.strip_prefix(b":")?;
            let parts: Vec<&[u8]> = tag.get(1..)?.split(|&c| c == b'-').collect();
            let [.., fac, sev, mnemonic] = parts.as_slice() else {
                return None;
            };
            let severity = match sev {
                [d @ b'0'..=b'7'] => d - b'0',
                _ => return None,
            };
            if fac.is_empty() || mnemonic.is_empty() {
                return None;
            }
            let msg = rest.strip_prefix(b" ").unwrap_or(rest);
            return Some(Cisco {
                host,
                date,
                tag,
                severity,
                mnemonic,
                msg,
            });
        }
        // `*` marks a clock not synchronised, `.` one that lost sync: the date is still read.
        let d = i
            .strip_prefix(b"*")
            .or_else(|| i.strip_prefix(b"."))
            .unwrap_or(i);
        if let Some((rest, bd)) = parse_syslog_bsd_date(d) {
            date = Some(bd);
            i = rest.strip_prefix(b":").unwrap_or(rest);
            i = skip_spaces(i);
            continue;
        }
        let n = i.iter().take_while(|&&c| c != b':' && c != SP).count();
        let (word, rest) = i.split_at_checked(n)?;
        if word.is_empty() || rest.first() != Some(&b':') || rest.get(1) != Some(&SP) {
            return None;
        }
        if !word.iter().all(u8::is_ascii_digit) {
            if !looks_like_hostname(word) {
                return None;
            }
            host = Some(word);
        }
        i = rest.get(2..).unwrap_or_default();
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn lenient(s: &[u8]) -> SyslogEvent {
        let received = Timestamp::parse_rfc3339("2024-06-15T12:00:00Z").unwrap();
        parse_syslog(s, received, &ParseOptions::default()).unwrap()
    }

    #[test]
    fn rfc5424_example_1() {
        // RFC 5424 §6.5 example 1.
        let e = lenient(b"<34>1 2003-10-11T22:14:15.003Z mymachine.example.com su - ID47 - \xEF\xBB\xBF'su root' failed for lonvick on /dev/pts/8");
        assert_eq!(e.format, SyslogFormat::Rfc5424);
        assert_eq!((e.facility, e.severity), (Some(4), Some(2)));
        assert_eq!(e.hostname.as_deref(), Some("mymachine.example.com"));
        assert_eq!(e.msgid.as_deref(), Some("ID47"));
        assert_eq!(e.ts.to_string(), "2003-10-11T22:14:15.003000Z");
        assert!(e.anomalies.is_empty());
    }

    /// The poison stamps: valid RFC 3339 whose UTC instant is beyond year 9999 or
    /// before 0000, and a clock two days ahead. Each keeps its text, takes the receive time
    /// as `ts`, and is flagged; the event serialises to what the collector parses back.
    #[test]
    fn stamps_out_of_range_or_far_ahead_take_the_receive_time() {
        let received = Timestamp::parse_rfc3339("2024-06-15T12:00:00Z").unwrap();
        for (line, text) in [
            (
                &b"<14>1 9999-12-31T23:59:59-12:00 h a - - - x"[..],
                "9999-12-31T23:59:59-12:00",
            ),
            (
                b"<14>1 0000-01-01T00:00:00+14:00 h a - - - x",
                "0000-01-01T00:00:00+14:00",
            ),
            (
                b"<14>1 2024-06-17T12:00:01Z h a - - - x",
                "2024-06-17T12:00:01Z",
            ),
            (
                b"<14>9999-12-31T23:59:59-12:00 h a: x",
                "9999-12-31T23:59:59-12:00",
            ),
        ] {
            let e = lenient(line);
            assert_eq!(e.timestamp.as_deref(), Some(text));
            assert_eq!(e.ts, received, "{text}");
            assert!(
                e.anomalies.contains(&Anomaly::TimestampOutOfRange),
                "{text}"
            );
            let json = serde_json::to_string(&mamori_models::Event::Syslog(e.clone())).unwrap();
            let back = mamori_models::Event::from_json_slice(json.as_bytes()).unwrap();
            assert_eq!(back, mamori_models::Event::Syslog(e));
        }
        // A day ahead is clock drift, not forgery: the message's own time stands.
        let e = lenient(b"<14>1 2024-06-16T11:59:59Z h a - - - x");
        assert_eq!(e.ts.to_string(), "2024-06-16T11:59:59.000000Z");
        assert!(e.anomalies.is_empty());
    }

    #[test]
    fn bsd_with_pid_and_year_inference() {
        let e = lenient(b"<13>Dec 31 23:59:59 host app[42]: hello");
        assert_eq!(e.timestamp.as_deref(), Some("2023-12-31T23:59:59"));
        assert_eq!(e.app_name.as_deref(), Some("app"));
        assert_eq!(e.procid.as_deref(), Some("42"));
        assert_eq!(e.msg.as_deref(), Some("hello"));
    }

    #[test]
    fn cisco_ios_with_zone() {
        let e = lenient(b"<189>Mar 24 18:06:03 10.0.0.1 1991219: *Mar 24 18:06:03.424 UTC: %SEC_LOGIN-5-LOGIN_SUCCESS: Login Success");
        assert_eq!(e.app_name.as_deref(), Some("%SEC_LOGIN-5-LOGIN_SUCCESS"));
        assert_eq!(e.msgid.as_deref(), Some("LOGIN_SUCCESS"));
        assert_eq!(e.timestamp.as_deref(), Some("2024-03-24T18:06:03.424Z"));
        assert_eq!(e.msg.as_deref(), Some("Login Success"));
    }

    #[test]
    fn strict_rejects_with_offset() {
        let r = parse_syslog(
            b"<1>1 2003-11-02T23:12",
            Timestamp::default(),
            &ParseOptions {
                strict: true,
                ..Default::default()
            },
        );
        assert!(matches!(r, Err(SyslogError::Rfc5424 { offset: 5, .. })));
    }

    #[test]
    fn probe_recognises_both_formats() {
        assert!(probe_syslog(
            b"<34>1 2003-10-11T22:14:15.003Z host su - - -"
        ));
        assert!(probe_syslog(b"<13>Oct 11 22:14:15 host su: x"));
        assert!(probe_syslog(b"<13>2024-01-05T10:00:00Z host su: x"));
        assert!(!probe_syslog(b"<192>1 - - - - - -"));
        assert!(!probe_syslog(b"GET / HTTP/1.1"));
    }

    /// RFC 3164 §4.3.3: a relay gives a message without PRI PRIORITY 13 (user.notice). The
    /// event still says the PRI was missing.
    #[test]
    fn a_message_without_pri_is_user_notice_and_flagged() {
        for line in [
            &b"Feb  5 17:32:18 10.0.0.99 sshd[7]: Accepted password"[..],
            b"1 2020-05-22T14:59:09.250-03:00 mx204 rpd 6589 - - bgp up",
            b"complete and utter gobbledegook",
            b"<999>Feb  5 17:32:18 10.0.0.99 sshd[7]: unreadable PRI",
        ] {
            let e = lenient(line);
            let text = String::from_utf8_lossy(line);
            assert_eq!(
                (e.priority, e.facility, e.severity),
                (Some(13), Some(1), Some(5)),
                "{text}"
            );
            assert!(e.anomalies.contains(&Anomaly::MissingPriority), "{text}");
        }
        // A severity stated by the content (Cisco IOS) is kept over the relay's default.
        let e = lenient(b"Mar 24 18:06:03 10.0.0.1 1991219: *Mar 24 18:06:03.424 UTC: %SEC_LOGIN-3-LOGIN_FAILED: x");
        assert_eq!((e.priority, e.severity), (Some(13), Some(3)));
        assert!(e.anomalies.contains(&Anomaly::MissingPriority));
        // A PRI that is there is never flagged.
        let e = lenient(b"<0>Oct 22 10:52:01 10.1.2.3 sched[0]: That's All Folks!");
        assert_eq!((e.priority, e.severity), (Some(0), Some(0)));
        assert!(e.anomalies.is_empty());
    }

    #[test]
    fn internationalised_hostnames_are_hostnames() {
        for (line, host) in [
            (
                "<13>Feb  5 17:32:18 müller-rtu sshd[7]: Accepted",
                "müller-rtu",
            ),
            (
                "<13>Feb  5 17:32:18 変電所-3.example sshd[7]: Accepted",
                "変電所-3.example",
            ),
            ("<13>Feb  5 17:32:18 Ωmega1 kernel: link up", "Ωmega1"),
        ] {
            let e = lenient(line.as_bytes());
            assert_eq!(e.hostname.as_deref(), Some(host), "{line}");
            assert!(e.app_name.is_some(), "{line}");
            assert!(e.anomalies.is_empty(), "{line}: {:?}", e.anomalies);
        }
        // Not UTF-8, or ending in punctuation: not a hostname, the text stays whole.
        let e = lenient(b"<13>Feb  5 17:32:18 m\xfcller sshd[7]: x");
        assert_eq!(e.hostname, None);
        let e = lenient("<13>Feb  5 17:32:18 müller- sshd[7]: x".as_bytes());
        assert_eq!(e.hostname, None);
    }

    #[test]
    fn a_plain_first_word_is_not_an_app_name() {
        // go-syslog's RFC 3164 test vector (rfc3164/machine_test.go).
        let e = lenient(b"<13>Feb  5 17:32:18 10.0.0.99 Use the BFG!");
        assert_eq!(e.hostname.as_deref(), Some("10.0.0.99"));
        assert_eq!(e.app_name, None);
        assert_eq!(e.msg.as_deref(), Some("Use the BFG!"));
        // A lone word is text too.
        let e = lenient(b"<13>Feb  5 17:32:18 plc-7 Rebooting");
        assert_eq!((e.app_name, e.msg.as_deref()), (None, Some("Rebooting")));
        // `tag:`, `tag[pid]:`, `tag[pid]` and a TAB-ended tag (Snare) are tags.
        for (line, app, pid, msg) in [
            ("<13>Feb  5 17:32:18 h su: x y", "su", None, "x y"),
            (
                "<13>Feb  5 17:32:18 h sshd[811]: x y",
                "sshd",
                Some("811"),
                "x y",
            ),
            (
                "<13>Feb  5 17:32:18 h sshd[811] x y",
                "sshd",
                Some("811"),
                "x y",
            ),
            (
                "<13>Feb  5 17:32:18 h MSWinEventLog\t1\tSecurity",
                "MSWinEventLog",
                None,
                "1\tSecurity",
            ),
            (
                "<13>Feb  5 17:32:18 h MSWinEventLog#0111#011Security",
                "MSWinEventLog",
                None,
                "1#011Security",
            ),
        ] {
            let e = lenient(line.as_bytes());
            assert_eq!(e.app_name.as_deref(), Some(app), "{line}");
            assert_eq!(e.procid.as_deref(), pid, "{line}");
            assert_eq!(e.msg.as_deref(), Some(msg), "{line}");
        }
        // rsyslog's reading, when asked for.
        let word = ParseOptions {
            tag: TagRule::Word,
            ..ParseOptions::default()
        };
        let e = parse_syslog(
            b"<13>Feb  5 17:32:18 10.0.0.99 Use the BFG!",
            Timestamp::default(),
            &word,
        )
        .unwrap();
        assert_eq!(
            (e.app_name.as_deref(), e.msg.as_deref()),
            (Some("Use"), Some("the BFG!"))
        );
        // `tag[pid]` without `:` is not enough when a colon is required.
        let colon = ParseOptions {
            tag: TagRule::Colon,
            ..ParseOptions::default()
        };
        let e = parse_syslog(
            b"<13>Feb  5 17:32:18 h sshd[811] x",
            Timestamp::default(),
            &colon,
        )
        .unwrap();
        assert_eq!(e.app_name, None);
    }

    #[test]
    fn garbage_is_unknown() {
        let e = lenient(b"\xff\xfe hello");
        assert_eq!(e.format, SyslogFormat::Unknown);
        assert!(e.anomalies.contains(&Anomaly::InvalidUtf8));
        assert_eq!(e.msg.as_deref(), Some("\u{fffd}\u{fffd} hello"));
    }
}
