//! Where records start and end in a capture file, and whether a record header is believable.
//! Pure functions over the bytes the reader has buffered (no I/O), so the resynchronisation
//! after a corrupt record can be tested and fuzzed on its own.
//!
//! Three levels of belief in a pcap record header, because real writers are sloppier than
//! the format:
//! - *sane*: it can describe a record at all (captured length from 1 to [`MAX_RECORD_BYTES`]);
//! - *plausible*: sane, and what a capture program writes (captured length within the original
//!   length, sub-second part below one second, a timestamp other than exactly zero), or flawed
//!   the way the file's previous records were (a writer's habit);
//! - *consistent*: plausible, and the captured length within the snapshot length (or the
//!   largest record read from the file so far, as some writers ignore the snapshot length:
//!   Wireshark's `libpcap.c` reads such files).
//!
//! Reading in order, a record with a sane header is read at once when the header after it
//! *confirms* it: plausible and at most [`MAX_RECORD_GAP_SECS`] later (for a flawed record:
//! flawed the same way, the writer's habit). Otherwise (including when the file ends right
//! after it) either that header is damaged or this record's length is wrong: a confirmed
//! candidate (below) starting after this record's header, within the length it claims and
//! close to it in time, says the length is wrong, and the record is corrupt. Without one, a
//! plausible record is read (truncated if the file ends inside it), and a flawed one only if
//! the file ends right after it or the next header is plausible and follows it in time.
//!
//! A pcapng block is read when its framing is intact: a length that is a multiple of 4, at
//! least its type's minimum, at most [`MAX_RECORD_BYTES`], and equal to the trailing length.
//!
//! After a corrupt record the reader scans forward one byte at a time for a *candidate*: a
//! consistent pcap header within [`MAX_RESYNC_JUMP_SECS`] of the time base (the last record
//! read that its successor confirmed), or a pcapng block of a known type with its framing
//! intact; confirmed by the record that follows it (for pcap, consistent too and at most
//! [`MAX_RECORD_GAP_SECS`] later), or by the end of the file right after it.

use std::fmt;

/// The largest record (pcap captured length, pcapng block length) believed.
pub const MAX_RECORD_BYTES: usize = 16 * 1024 * 1024;

/// Two consecutive pcap records confirm each other only when the second is at most this much
/// later than the first (and at most one second earlier, by the seconds field); the last record of a file confirms
/// itself only this close to the time base. An hour: a longer silence costs at most the one
/// record before it, while a header read a few bytes off (its seconds taken from a sub-second
/// field, anywhere in twelve days of 1970) rarely pairs with another.
pub const MAX_RECORD_GAP_SECS: u32 = 3_600;

/// During a resynchronisation, a pcap candidate further than this in time from the time base
/// (the last record read that the record after it confirmed) is refused: a corrupt stretch
/// rarely spans 30 days of capture, and headers read a few bytes off land in January 1970.
pub const MAX_RESYNC_JUMP_SECS: u32 = 30 * 86_400;

/// How many bytes from a record's start a decision about it may look at: the record, the
/// header after it, and a candidate inside it with the header after that.
pub const MAX_LOOKAHEAD_BYTES: usize = 2 * MAX_RECORD_BYTES + 4 * PCAP_MAX_HEADER_BYTES;

const PCAP_MAX_HEADER_BYTES: usize = 24;

/// Why a record was judged corrupt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Corruption {
    /// pcap: the captured length is over [`MAX_RECORD_BYTES`].
    CaptureLengthTooLarge,
    /// pcap: a record of no captured bytes: nothing to read, and what a zero-filled stretch or
    /// a header read a few bytes off most often looks like.
    EmptyRecord,
    /// pcap: the captured length exceeds the original length, and the header after it does
    /// not vouch for the record.
    CaptureLengthOverOriginal,
    /// pcap: the sub-second part is a second or more, and the header after it does not vouch
    /// for the record.
    SubsecondOutOfRange,
    /// pcap: a timestamp of exactly 1970-01-01T00:00:00 (zero-filled), and the header after it
    /// does not vouch for the record.
    ZeroTimestamp,
    /// pcap: the record looks right but the next header does not, and a confirmed record
    /// starts inside it: its length is wrong.
    LengthDisagreesWithNextRecord,
    /// pcapng: a block length that is not a multiple of 4.
    BlockLengthNotMultipleOf4,
    /// pcapng: a block length below the minimum for its type.
    BlockTooShort,
    /// pcapng: a block length over [`MAX_RECORD_BYTES`].
    BlockTooLong,
    /// pcapng: the trailing block length differs from the leading one.
    TrailingLengthDiffers,
    /// pcapng: a section header whose byte-order magic is neither order.
    UnknownByteOrder,
    /// pcapng: an enhanced packet block whose captured length does not fit in the block.
    PacketLongerThanBlock,
    /// pcapng: a packet for an interface no description block declared (or one that could
    /// not be read).
    UndeclaredInterface,
    /// pcapng: a block of an unknown type that runs past the end of the file.
    UnknownBlockTypeCut,
    /// A block the parser refused although its framing is intact.
    UnreadableBlock,
    /// pcapng: an interface description beyond the bound on interfaces per section.
    TooManyInterfaces,
    /// A record too large for the read buffer (never for a record within the limits above).
    LargerThanReadBuffer,
}

impl Corruption {
    pub fn as_str(self) -> &'static str {
        match self {
            Corruption::CaptureLengthTooLarge => "captured length over 16 MiB",
            Corruption::CaptureLengthOverOriginal => "captured length over the original length",
            Corruption::SubsecondOutOfRange => "sub-second part of a second or more",
            Corruption::ZeroTimestamp => "timestamp of zero",
            Corruption::EmptyRecord => "captured length of zero",
            Corruption::LengthDisagreesWithNextRecord => {
                "record length disagrees with where the next record starts"
            }
            Corruption::BlockLengthNotMultipleOf4 => "block length not a multiple of 4",
            Corruption::BlockTooShort => "block length too short for its type",
            Corruption::BlockTooLong => "block length over 16 MiB",
            Corruption::TrailingLengthDiffers => "trailing block length differs",
            Corruption::UnknownByteOrder => "section header with an unknown byte-order magic",
            Corruption::PacketLongerThanBlock => "captured length longer than its block",
            Corruption::UndeclaredInterface => "packet for an undeclared interface",
            Corruption::UnknownBlockTypeCut => {
                "block of an unknown type cut by the end of the file"
            }
            Corruption::UnreadableBlock => "block the parser refused",
            Corruption::TooManyInterfaces => "more than 65536 interfaces in a section",
            Corruption::LargerThanReadBuffer => "record larger than the read buffer",
        }
    }
}

impl fmt::Display for Corruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What to do with the record at the start of the buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame {
    /// A record of this many bytes, all buffered, to be parsed and delivered.
    Record(usize),
    /// A record of this many bytes whose framing is intact but whose content is refused: skip it
    /// whole, no resynchronisation needed.
    Malformed(usize, Corruption),
    /// The framing is lost here: resynchronise.
    Corrupt(Corruption),
    /// No decision before this many bytes are buffered (or the file ends).
    NeedBytes(usize),
}

/// The outcome of a scan for the next record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scan {
    /// A confirmed record starts at this offset.
    Found(usize),
    /// The candidate at `at` needs `bytes` bytes from `at` before it can be judged; every
    /// position before it was refused.
    NeedBytes { at: usize, bytes: usize },
    /// Every position in the range was refused.
    NotFound,
}

/// What the buffer looks like at a candidate position.
enum Candidate {
    Confirmed,
    Refused,
    NeedBytes(usize),
}

fn u32_at(data: &[u8], at: usize, big_endian: bool) -> Option<u32> {
    let bytes: [u8; 4] = data.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(if big_endian {
        u32::from_be_bytes(bytes)
    } else {
        u32::from_le_bytes(bytes)
    })
}

/// The record layout of a classic pcap file, from its file header.
#[derive(Clone, Copy, Debug)]
pub struct PcapLayout {
    pub big_endian: bool,
    /// 16, or 24 for the "modified" format (magic `0xa1b2cd34`).
    pub header_len: usize,
    /// Sub-second units per second: 1 000 000 or 1 000 000 000.
    pub frac_units: u32,
    /// The largest captured length a candidate may have: the file header's snapshot length,
    /// raised by the reader to the largest record read (0: no limit but [`MAX_RECORD_BYTES`]).
    pub max_caplen: u32,
    /// A flaw two consecutive records shared (a writer that puts nanoseconds in a microsecond
    /// file, say): no longer a sign of corruption in this file. Learnt by the reader.
    pub habit: Option<Corruption>,
}

#[derive(Clone, Copy, Debug)]
struct PcapHeader {
    ts_sec: u32,
    ts_frac: u32,
    caplen: u32,
    origlen: u32,
}

impl PcapHeader {
    /// `None` when the buffer holds fewer than a header's bytes at `at`.
    fn read(data: &[u8], at: usize, layout: &PcapLayout) -> Option<PcapHeader> {
        data.get(at..at.checked_add(layout.header_len)?)?;
        let field = |n: usize| u32_at(data, at + 4 * n, layout.big_endian);
        Some(PcapHeader {
            ts_sec: field(0)?,
            ts_frac: field(1)?,
            caplen: field(2)?,
            origlen: field(3)?,
        })
    }

    /// Why no record can start with this header at all.
    fn insanity(&self) -> Option<Corruption> {
        if self.caplen as usize > MAX_RECORD_BYTES {
            Some(Corruption::CaptureLengthTooLarge)
        } else if self.caplen == 0 {
            Some(Corruption::EmptyRecord)
        } else {
            None
        }
    }

    /// Why a capture program would not have written this header (unless it is the file's
    /// habit, see [`PcapLayout::habit`]).
    fn implausibility(&self, layout: &PcapLayout) -> Option<Corruption> {
        let problem = if let Some(c) = self.insanity() {
            Some(c)
        } else if self.caplen > self.origlen {
            Some(Corruption::CaptureLengthOverOriginal)
        } else if self.ts_frac >= layout.frac_units {
            Some(Corruption::SubsecondOutOfRange)
        } else if self.ts_sec == 0 && self.ts_frac == 0 {
            Some(Corruption::ZeroTimestamp)
        } else {
            None
        };
        problem.filter(|p| Some(*p) != layout.habit)
    }

    fn is_consistent(&self, layout: &PcapLayout) -> bool {
        self.implausibility(layout).is_none()
            && (layout.max_caplen == 0 || self.caplen <= layout.max_caplen)
    }

    /// Bytes from the header's start to the next record's.
    fn record_len(&self, layout: &PcapLayout) -> usize {
        layout.header_len + self.caplen as usize
    }
}

/// Whether a record at `second` can follow one at `first` (seconds).
fn follows(first: u32, second: u32) -> bool {
    second.saturating_add(1) >= first && second.saturating_sub(first) <= MAX_RECORD_GAP_SECS
}

/// What the header after a record says about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Successor {
    /// Plausible (or flawed in the same way as the record), and following it in time.
    Confirms,
    /// Plausible, not following it in time.
    Plausible,
    Refutes,
}

fn successor(header: &PcapHeader, next: &PcapHeader, layout: &PcapLayout) -> Successor {
    let flaw = next.implausibility(layout);
    if (flaw.is_none() || flaw == header.implausibility(layout))
        && follows(header.ts_sec, next.ts_sec)
    {
        Successor::Confirms
    } else if flaw.is_none() {
        Successor::Plausible
    } else {
        Successor::Refutes
    }
}

/// What the reader learns from the pcap record at the start of `data` when the header after it
/// confirms it: its seconds (the time base for judging candidates; a record read without
/// confirmation does not move it, so a bogus record read in place cannot drag it to 1970), and
/// a flaw both share (the file's habit).
pub fn pcap_confirmed(data: &[u8], layout: &PcapLayout) -> Option<(u32, Option<Corruption>)> {
    let header = PcapHeader::read(data, 0, layout)?;
    let next = PcapHeader::read(data, header.record_len(layout), layout)?;
    (header.insanity().is_none() && successor(&header, &next, layout) == Successor::Confirms)
        .then(|| (header.ts_sec, header.implausibility(layout)))
}

/// Judges the pcap record at the start of `data`. `eof`: nothing follows `data` in the file;
/// `time_base`: see [`pcap_confirmed`].
pub fn pcap_frame(data: &[u8], layout: &PcapLayout, eof: bool, time_base: Option<u32>) -> Frame {
    let hl = layout.header_len;
    let Some(header) = PcapHeader::read(data, 0, layout) else {
        return Frame::NeedBytes(hl);
    };
    if let Some(c) = header.insanity() {
        return Frame::Corrupt(c);
    }
    let len = header.record_len(layout);
    let flaw = header.implausibility(layout);
    if data.len() < len {
        if !eof {
            return Frame::NeedBytes(len);
        }
        if let Some(c) = flaw {
            return Frame::Corrupt(c);
        }
        // Cut by the end of the file: truncated, unless a record starts inside it (it was cut
        // short and more was written after it). Its own time is not trusted for that.
        return match pcap_scan(data, hl..data.len(), layout, eof, time_base) {
            Scan::Found(_) => Frame::Corrupt(Corruption::LengthDisagreesWithNextRecord),
            Scan::NeedBytes { .. } | Scan::NotFound => Frame::NeedBytes(len),
        };
    }
    let next = PcapHeader::read(data, len, layout);
    if next.is_none() && !eof {
        return Frame::NeedBytes(len + hl);
    }
    if !(eof && data.len() == len) {
        // No next header: it is cut by the end of the file.
        let successor = next.map_or(Successor::Refutes, |n| successor(&header, &n, layout));
        let next_flaw = next.map(|n| n.implausibility(layout));
        match (flaw, successor) {
            (None, Successor::Confirms) => return Frame::Record(len),
            // The same flaw twice in a row: the writer's habit.
            (Some(c), Successor::Confirms) if next_flaw == Some(Some(c)) => {
                return Frame::Record(len);
            }
            (Some(c), Successor::Plausible | Successor::Refutes) => return Frame::Corrupt(c),
            // Plausible but not confirmed, or flawed and followed by a plausible record.
            _ => {}
        }
    }
    // Either the next header is damaged or this record's length is (or, flawed, the record
    // is garbage; or it ends the file, which confirms a length only so far): a confirmed
    // record starting after this header, within the length it claims and close in time, says
    // the length is wrong. Otherwise the record is read.
    match pcap_scan(
        data,
        hl..len,
        layout,
        eof,
        time_base.or(Some(header.ts_sec)),
    ) {
        Scan::Found(_) => Frame::Corrupt(flaw.unwrap_or(Corruption::LengthDisagreesWithNextRecord)),
        Scan::NeedBytes { at, bytes } => Frame::NeedBytes(at + bytes),
        Scan::NotFound => Frame::Record(len),
    }
}

/// Scans `range` of `data` for the first confirmed pcap record; `time_base`: see
/// [`pcap_confirmed`].
pub fn pcap_scan(
    data: &[u8],
    range: std::ops::Range<usize>,
    layout: &PcapLayout,
    eof: bool,
    time_base: Option<u32>,
) -> Scan {
    for at in range {
        match pcap_candidate(data, at, layout, eof, time_base) {
            Candidate::Confirmed => return Scan::Found(at),
            Candidate::Refused => {}
            Candidate::NeedBytes(bytes) => return Scan::NeedBytes { at, bytes },
        }
    }
    Scan::NotFound
}

fn pcap_candidate(
    data: &[u8],
    at: usize,
    layout: &PcapLayout,
    eof: bool,
    time_base: Option<u32>,
) -> Candidate {
    let hl = layout.header_len;
    let Some(header) = PcapHeader::read(data, at, layout) else {
        return if eof {
            Candidate::Refused
        } else {
            Candidate::NeedBytes(hl)
        };
    };
    if !header.is_consistent(layout)
        || time_base.is_some_and(|t| t.abs_diff(header.ts_sec) > MAX_RESYNC_JUMP_SECS)
    {
        return Candidate::Refused;
    }
    let len = header.record_len(layout);
    let end = at + len;
    match PcapHeader::read(data, end, layout) {
        Some(next) => {
            if next.is_consistent(layout) && follows(header.ts_sec, next.ts_sec) {
                Candidate::Confirmed
            } else {
                Candidate::Refused
            }
        }
        None if !eof => Candidate::NeedBytes(len + hl),
        // At the end of the file: a record that ends exactly there confirms itself when it
        // follows the time base.
        None if end == data.len() && time_base.is_none_or(|t| follows(t, header.ts_sec)) => {
            Candidate::Confirmed
        }
        None => Candidate::Refused,
    }
}

/// pcapng block types a resynchronisation may land on (Wireshark's pcapng.c knows the same).
const NG_SECTION_HEADER: u32 = 0x0A0D_0D0A;
const NG_INTERFACE_DESCRIPTION: u32 = 1;
const NG_SIMPLE_PACKET: u32 = 3;
const NG_NAME_RESOLUTION: u32 = 4;
const NG_INTERFACE_STATISTICS: u32 = 5;
const NG_ENHANCED_PACKET: u32 = 6;
const NG_SYSTEMD_JOURNAL: u32 = 9;
const NG_DECRYPTION_SECRETS: u32 = 0x0A;
const NG_CUSTOM: u32 = 0x0BAD;
const NG_CUSTOM_NOCOPY: u32 = 0x4000_0BAD;
const NG_BYTE_ORDER_MAGIC: u32 = 0x1A2B_3C4D;

/// The smallest block of a known type (the header fields before the options), else 12.
fn ng_min_len(block_type: u32) -> Option<usize> {
    Some(match block_type {
        NG_SECTION_HEADER => 28,
        NG_INTERFACE_DESCRIPTION => 20,
        NG_SIMPLE_PACKET => 16,
        NG_NAME_RESOLUTION => 12,
        NG_INTERFACE_STATISTICS => 24,
        NG_ENHANCED_PACKET => 32,
        NG_SYSTEMD_JOURNAL => 12,
        NG_DECRYPTION_SECRETS => 20,
        NG_CUSTOM | NG_CUSTOM_NOCOPY => 16,
        _ => return None,
    })
}

/// What [`ng_frame`] needs to know about the section being read.
#[derive(Clone, Copy, Debug)]
pub struct NgSection {
    pub big_endian: bool,
    /// Interfaces declared so far in the section (a candidate packet block must name one).
    pub interfaces: usize,
}

/// A block's type and length, and the byte order of what follows a section header.
struct NgHeader {
    block_type: u32,
    len: usize,
    big_endian: bool,
}

fn ng_header(data: &[u8], at: usize, big_endian: bool) -> Result<NgHeader, Frame> {
    let block_type = u32_at(data, at, big_endian).ok_or(Frame::NeedBytes(8))?;
    let big_endian = if block_type == NG_SECTION_HEADER {
        match u32_at(data, at + 8, false).ok_or(Frame::NeedBytes(12))? {
            NG_BYTE_ORDER_MAGIC => false,
            m if m == NG_BYTE_ORDER_MAGIC.swap_bytes() => true,
            _ => return Err(Frame::Corrupt(Corruption::UnknownByteOrder)),
        }
    } else {
        big_endian
    };
    let len = u32_at(data, at + 4, big_endian).ok_or(Frame::NeedBytes(8))? as usize;
    if !len.is_multiple_of(4) {
        return Err(Frame::Corrupt(Corruption::BlockLengthNotMultipleOf4));
    }
    if len < ng_min_len(block_type).unwrap_or(12) {
        return Err(Frame::Corrupt(Corruption::BlockTooShort));
    }
    if len > MAX_RECORD_BYTES {
        return Err(Frame::Corrupt(Corruption::BlockTooLong));
    }
    Ok(NgHeader {
        block_type,
        len,
        big_endian,
    })
}

/// Judges the pcapng block at `at` in `data` on its framing alone (type, both lengths) and
/// the packet length of an enhanced packet block. Offsets in the result are from `at`.
fn ng_block(data: &[u8], at: usize, section: &NgSection) -> Result<(NgHeader, Frame), Frame> {
    let header = ng_header(data, at, section.big_endian)?;
    let len = header.len;
    let Some(trailer) = u32_at(data, at + len - 4, header.big_endian) else {
        return Err(Frame::NeedBytes(len));
    };
    if trailer as usize != len {
        return Err(Frame::Corrupt(Corruption::TrailingLengthDiffers));
    }
    if header.block_type == NG_ENHANCED_PACKET {
        let caplen = u32_at(data, at + 20, header.big_endian).unwrap_or(u32::MAX) as usize;
        if caplen
            .checked_next_multiple_of(4)
            .is_none_or(|c| c > len - 32)
        {
            return Ok((
                header,
                Frame::Malformed(len, Corruption::PacketLongerThanBlock),
            ));
        }
    }
    Ok((header, Frame::Record(len)))
}

/// Judges the pcapng block at the start of `data`. Blocks of unknown types are read (and
/// skipped by the caller) when their framing is intact; one cut by the end of the file is
/// corrupt rather than truncated.
pub fn ng_frame(data: &[u8], section: &NgSection, eof: bool) -> Frame {
    match ng_block(data, 0, section) {
        Ok((_, frame))
        | Err(frame @ (Frame::Corrupt(_) | Frame::Malformed(..) | Frame::Record(_))) => frame,
        Err(Frame::NeedBytes(bytes)) => {
            let known = u32_at(data, 0, section.big_endian).and_then(ng_min_len);
            if eof && bytes > 8 && known.is_none() {
                Frame::Corrupt(Corruption::UnknownBlockTypeCut)
            } else {
                Frame::NeedBytes(bytes)
            }
        }
    }
}

/// Scans `range` of `data` for the first confirmed pcapng block.
pub fn ng_scan(data: &[u8], range: std::ops::Range<usize>, section: &NgSection, eof: bool) -> Scan {
    for at in range {
        match ng_candidate(data, at, section, eof) {
            Candidate::Confirmed => return Scan::Found(at),
            Candidate::Refused => {}
            Candidate::NeedBytes(bytes) => return Scan::NeedBytes { at, bytes },
        }
    }
    Scan::NotFound
}

fn ng_candidate(data: &[u8], at: usize, section: &NgSection, eof: bool) -> Candidate {
    let need = |bytes: usize| {
        if eof {
            Candidate::Refused
        } else {
            Candidate::NeedBytes(bytes)
        }
    };
    let (header, frame) = match ng_block(data, at, section) {
        Ok(judged) => judged,
        Err(Frame::NeedBytes(bytes)) => return need(bytes),
        Err(_) => return Candidate::Refused,
    };
    if ng_min_len(header.block_type).is_none() || !matches!(frame, Frame::Record(_)) {
        return Candidate::Refused;
    }
    if header.block_type == NG_ENHANCED_PACKET {
        let if_id = u32_at(data, at + 8, header.big_endian).unwrap_or(u32::MAX);
        if if_id as usize >= section.interfaces {
            return Candidate::Refused;
        }
    }
    let end = at + header.len;
    if end == data.len() && eof {
        return Candidate::Confirmed;
    }
    // A section header starts a new section: the block after it may declare the first
    // interface, which the candidate check of a packet block cannot know yet.
    let after = NgSection {
        big_endian: header.big_endian,
        interfaces: if header.block_type == NG_SECTION_HEADER {
            usize::MAX
        } else {
            section.interfaces + usize::from(header.block_type == NG_INTERFACE_DESCRIPTION)
        },
    };
    match ng_block(data, end, &after) {
        Ok((next, _)) if ng_min_len(next.block_type).is_some() => Candidate::Confirmed,
        Ok(_) => Candidate::Refused,
        // The next block is cut by the end of the file: reported as truncated when reached.
        Err(Frame::NeedBytes(_)) if eof => Candidate::Confirmed,
        Err(Frame::NeedBytes(bytes)) => Candidate::NeedBytes(header.len + bytes),
        Err(_) => Candidate::Refused,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    const LAYOUT: PcapLayout = PcapLayout {
        big_endian: false,
        header_len: 16,
        frac_units: 1_000_000,
        max_caplen: 65_535,
        habit: None,
    };

    fn record(ts: u32, frac: u32, caplen: u32, origlen: u32, fill: u8) -> Vec<u8> {
        let mut r = Vec::new();
        for v in [ts, frac, caplen, origlen] {
            r.extend(v.to_le_bytes());
        }
        r.extend(std::iter::repeat_n(fill, caplen as usize));
        r
    }

    #[test]
    fn a_consistent_record_followed_by_another_is_read() {
        let mut d = record(100, 5, 20, 20, 0xAA);
        d.extend(record(101, 5, 30, 30, 0xBB));
        assert_eq!(pcap_frame(&d, &LAYOUT, false, None), Frame::Record(36));
        // Without the next header and more to come, no decision yet.
        assert_eq!(
            pcap_frame(&d[..40], &LAYOUT, false, None),
            Frame::NeedBytes(52)
        );
        // At the end of the file the last record stands on its own.
        assert_eq!(pcap_frame(&d[..36], &LAYOUT, true, None), Frame::Record(36));
    }

    #[test]
    fn a_record_over_the_snaplen_is_read_but_is_no_candidate() {
        let layout = PcapLayout {
            max_caplen: 10,
            ..LAYOUT
        };
        let mut d = record(100, 5, 20, 20, 0);
        d.extend(record(101, 5, 30, 30, 0));
        assert_eq!(pcap_frame(&d, &layout, false, None), Frame::Record(36));
        assert_eq!(
            pcap_scan(&d, 0..d.len(), &layout, true, None),
            Scan::NotFound
        );
    }

    #[test]
    fn an_implausible_record_is_read_only_when_the_next_one_confirms_it() {
        let mut d = record(100, 2_000_000, 20, 20, 0xAA);
        d.extend(record(101, 5, 30, 30, 0xBB));
        assert_eq!(pcap_frame(&d, &LAYOUT, true, None), Frame::Record(36));
        // Not yet at the end of the file: a record might start inside it, in bytes to come.
        assert!(matches!(
            pcap_frame(&d, &LAYOUT, false, None),
            Frame::NeedBytes(_)
        ));
        d.truncate(36);
        d.extend([0xEE; 40]);
        assert_eq!(
            pcap_frame(&d, &LAYOUT, true, None),
            Frame::Corrupt(Corruption::SubsecondOutOfRange)
        );
    }

    #[test]
    fn a_record_whose_length_grew_is_corrupt_when_a_record_starts_inside_it() {
        // The first record says 40 bytes, holds 20; the next two start after those 20.
        let mut d = record(100, 5, 20, 20, 0xAA);
        d[8] = 40; // captured length
        d[12] = 40; // original length
        d.extend(record(101, 5, 30, 30, 0xBB));
        d.extend(record(102, 5, 30, 30, 0xCC));
        assert_eq!(
            pcap_frame(&d, &LAYOUT, true, None),
            Frame::Corrupt(Corruption::LengthDisagreesWithNextRecord)
        );
        assert_eq!(
            pcap_scan(&d, 1..d.len(), &LAYOUT, true, None),
            Scan::Found(36)
        );
    }

    #[test]
    fn a_candidate_needs_a_second_record_close_in_time() {
        // Zero-filled packets, so that no header read 4 bytes off looks consistent.
        let mut d = record(100, 5, 20, 20, 0);
        d.extend(record(100 + MAX_RECORD_GAP_SECS + 1, 5, 30, 30, 0));
        // The second record ends the file: it is judged against the time base.
        assert_eq!(
            pcap_scan(&d, 0..d.len(), &LAYOUT, true, Some(100)),
            Scan::NotFound
        );
        assert_eq!(
            pcap_scan(&d, 0..d.len(), &LAYOUT, true, None),
            Scan::Found(36)
        );
        // Followed by fewer bytes than a header, it is not believed.
        d.extend([0xEE; 8]);
        assert_eq!(
            pcap_scan(&d, 0..d.len(), &LAYOUT, true, None),
            Scan::NotFound
        );
    }

    #[test]
    fn a_candidate_far_in_time_from_the_last_record_read_is_refused() {
        let mut d = record(100, 5, 20, 20, 0);
        d.extend(record(101, 5, 30, 30, 0));
        assert_eq!(
            pcap_scan(&d, 0..d.len(), &LAYOUT, false, Some(99)),
            Scan::Found(0)
        );
        let far = Some(100 + MAX_RESYNC_JUMP_SECS + 1);
        assert_eq!(
            pcap_scan(&d, 0..d.len(), &LAYOUT, true, far),
            Scan::NotFound
        );
    }

    #[test]
    fn zero_filled_regions_are_never_records() {
        let d = [0u8; 64];
        assert_eq!(
            pcap_frame(&d, &LAYOUT, true, None),
            Frame::Corrupt(Corruption::EmptyRecord)
        );
        assert_eq!(pcap_scan(&d, 0..64, &LAYOUT, true, None), Scan::NotFound);
    }

    fn ng_block_bytes(kind: u32, body: &[u8], trailer: Option<u32>) -> Vec<u8> {
        let len = (12 + body.len()) as u32;
        let mut b = Vec::new();
        b.extend(kind.to_le_bytes());
        b.extend(len.to_le_bytes());
        b.extend(body);
        b.extend(trailer.unwrap_or(len).to_le_bytes());
        b
    }

    #[test]
    fn pcapng_framing_checks() {
        let section = NgSection {
            big_endian: false,
            interfaces: 1,
        };
        let nrb = ng_block_bytes(4, &[0; 4], None);
        assert_eq!(ng_frame(&nrb, &section, false), Frame::Record(16));
        let bad_trailer = ng_block_bytes(4, &[0; 4], Some(20));
        assert_eq!(
            ng_frame(&bad_trailer, &section, false),
            Frame::Corrupt(Corruption::TrailingLengthDiffers)
        );
        let mut odd = nrb.clone();
        odd[4] = 17;
        assert_eq!(
            ng_frame(&odd, &section, false),
            Frame::Corrupt(Corruption::BlockLengthNotMultipleOf4)
        );
        let unknown = ng_block_bytes(0x1234, &[0; 8], None);
        assert_eq!(ng_frame(&unknown, &section, false), Frame::Record(20));
        assert_eq!(
            ng_frame(&unknown[..12], &section, true),
            Frame::Corrupt(Corruption::UnknownBlockTypeCut)
        );
        assert_eq!(ng_frame(&nrb[..12], &section, true), Frame::NeedBytes(16));
        // An unknown type is read in place but never resynchronised onto.
        let mut d = unknown.clone();
        d.extend(&nrb);
        assert_eq!(ng_scan(&d, 0..d.len(), &section, true), Scan::Found(20));
    }
}
