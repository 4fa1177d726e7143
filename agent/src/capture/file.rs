//! Streaming reader for pcap (µs and ns, both byte orders) and pcapng (several interfaces and
//! sections, EPB and SPB) files. Memory stays bounded whatever the file size: the reader keeps
//! one circular buffer that grows only as far as the largest record (and the look-ahead that
//! judges it) needs, [`MAX_RECORD_BYTES`] twice at most.
//!
//! A corrupt record does not end the file, as it does not in Wireshark or Zeek: the reader
//! skips to the next record it can believe (the rules are in [`framing`]), counts what it
//! skipped in the [`FileSummary`], and logs one warning per file saying where. A file is an
//! error only when it cannot be opened, is not a capture, ends inside a record (truncated), or
//! holds corruption and not one readable packet.

mod framing;

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use pcap_parser::pcapng::Block;
use pcap_parser::traits::{PcapNGPacketBlock, PcapReaderIterator};
use pcap_parser::{PcapBlockOwned, PcapError, create_reader};

pub use framing::{Corruption, MAX_RECORD_BYTES};
use framing::{Frame, NgSection, PcapLayout, Scan};

use super::{LinkType, RawPacket};
use mamori_models::Timestamp;

const INITIAL_BUFFER_BYTES: usize = 256 * 1024;
/// The smallest read buffer [`read_capture`] accepts (a pcap file header and a little more).
const MIN_BUFFER_BYTES: usize = 64;
/// The read buffer never grows past this (about 32 MiB).
const MAX_BUFFER_BYTES: usize = framing::MAX_LOOKAHEAD_BYTES;
/// Interfaces remembered per pcapng section; a description beyond it is refused (counted).
const MAX_INTERFACES: usize = 65_536;

/// Why a capture file could not be read to its end.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("{path}: cannot open: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: empty file")]
    Empty { path: PathBuf },
    #[error("{path}: not a pcap or pcapng file ({reason})")]
    NotACapture { path: PathBuf, reason: String },
    #[error("{path}: record {record}: truncated (the file ends inside it)")]
    Truncated { path: PathBuf, record: u64 },
    #[error(
        "{path}: no packet could be read: {skipped_bytes} bytes are corrupt, the first at \
         offset {offset} ({reason})"
    )]
    NothingReadable {
        path: PathBuf,
        skipped_bytes: u64,
        offset: u64,
        reason: Corruption,
    },
    #[error("{path}: read error after record {record}")]
    Read { path: PathBuf, record: u64 },
}

/// What was read from one file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FileSummary {
    /// Packet records delivered.
    pub packets: u64,
    /// Corrupt records skipped: records refused whole (their framing intact) plus places where
    /// the framing was lost (see `resynchronisations`).
    pub corrupt_records: u64,
    /// Times the framing was lost and the reader scanned forward, byte by byte, for the next
    /// record it could believe (whether or not it found one before the end of the file).
    pub resynchronisations: u64,
    /// Bytes not read as records because they were corrupt: refused records and everything a
    /// resynchronisation scanned over.
    pub skipped_bytes: u64,
    /// The first corrupt record: its offset from the start of the file and why it was refused.
    pub first_corruption: Option<(u64, Corruption)>,
}

impl FileSummary {
    /// Adds `other`'s counters (the first corruption stays the earlier file's).
    pub fn add(&mut self, other: &FileSummary) {
        self.packets += other.packets;
        self.corrupt_records += other.corrupt_records;
        self.resynchronisations += other.resynchronisations;
        self.skipped_bytes += other.skipped_bytes;
        self.first_corruption = self.first_corruption.or(other.first_corruption);
    }
}

#[derive(Clone, Copy, Debug)]
struct Interface {
    link_type: LinkType,
    /// Timestamp units per second.
    resolution: u64,
    offset_secs: i64,
    snaplen: u32,
}

#[derive(Debug)]
enum Format {
    Pcap {
        layout: PcapLayout,
        link_type: LinkType,
    },
    /// `None` for an interface whose description could not be read: its packets are refused
    /// and the later interfaces keep their numbers.
    Ng {
        big_endian: bool,
        interfaces: Vec<Option<Interface>>,
    },
}

/// Reads every packet of `path` in file order and hands it to `on_packet`. Corrupt records are
/// skipped (see the module documentation); on an error, everything before it was delivered.
pub fn read_capture_file(
    path: &Path,
    on_packet: impl FnMut(&RawPacket<'_>),
) -> Result<FileSummary, CaptureError> {
    let (summary, result) = read_capture_file_with_summary(path, on_packet);
    result.map(|()| summary)
}

/// Like [`read_capture_file`], and the summary is returned even when the file ends in an error
/// (a truncated last record), so the corruption counted before it is not lost.
pub fn read_capture_file_with_summary(
    path: &Path,
    on_packet: impl FnMut(&RawPacket<'_>),
) -> (FileSummary, Result<(), CaptureError>) {
    match File::open(path) {
        Ok(file) => read_capture(file, path, INITIAL_BUFFER_BYTES, on_packet),
        Err(source) => (
            FileSummary::default(),
            Err(CaptureError::Open {
                path: path.to_owned(),
                source,
            }),
        ),
    }
}

/// Reads a capture from any byte stream (`path` names it in errors and logs), starting with a
/// read buffer of `initial_buffer_bytes` (at least 64 bytes; the file header, or a pcapng
/// file's first section header block, must fit). For tests and fuzzing, which use small
/// buffers and short reads to show that where the reads fall does not change the result.
pub fn read_capture<R: Read + Send>(
    input: R,
    path: &Path,
    initial_buffer_bytes: usize,
    mut on_packet: impl FnMut(&RawPacket<'_>),
) -> (FileSummary, Result<(), CaptureError>) {
    let capacity = initial_buffer_bytes.clamp(MIN_BUFFER_BYTES, MAX_BUFFER_BYTES);
    let mut reader = match FileReader::open(input, path, capacity) {
        Ok(reader) => reader,
        Err(e) => return (FileSummary::default(), Err(e)),
    };
    let mut result = reader.run(&mut on_packet);
    let summary = reader.summary;
    if let Some((offset, reason)) = summary.first_corruption {
        tracing::warn!(
            file = %path.display(),
            corrupt_records = summary.corrupt_records,
            resynchronisations = summary.resynchronisations,
            skipped_bytes = summary.skipped_bytes,
            first_offset = offset,
            first_reason = %reason,
            packets = summary.packets,
            "capture file: corrupt records skipped, reading went on after them"
        );
        if result.is_ok() && summary.packets == 0 {
            result = Err(CaptureError::NothingReadable {
                path: path.to_owned(),
                skipped_bytes: summary.skipped_bytes,
                offset,
                reason,
            });
        }
    }
    (summary, result)
}

/// One file being read: pcap-parser's streaming reader (its buffer, and its parsers once a
/// record is known to be whole and believable) and what the file said so far.
struct FileReader<'a> {
    reader: Box<dyn PcapReaderIterator + Send + 'a>,
    path: &'a Path,
    capacity: usize,
    format: Format,
    summary: FileSummary,
    /// Packet records met (read or refused), to name a truncated one.
    records: u64,
    /// pcap: see [`framing::pcap_confirmed`].
    time_base: Option<u32>,
}

enum Mode {
    Normal,
    /// The framing is lost; positions before `from` in the buffer are already refused.
    Resync {
        from: usize,
    },
}

impl<'a> FileReader<'a> {
    fn open<R: Read + Send + 'a>(
        input: R,
        path: &'a Path,
        capacity: usize,
    ) -> Result<Self, CaptureError> {
        let mut reader = match create_reader(capacity, input) {
            Ok(r) => r,
            Err(PcapError::Eof) => {
                return Err(CaptureError::Empty {
                    path: path.to_owned(),
                });
            }
            Err(e) => {
                return Err(CaptureError::NotACapture {
                    path: path.to_owned(),
                    reason: e.to_string(),
                });
            }
        };
        // A pcapng file starts with its section header block, read like any other block; a
        // pcap file with the file header, which the reader hands out first.
        let is_ng = reader.data().get(..4) == Some(&0x0A0D_0D0Au32.to_le_bytes()[..]);
        let format = if is_ng {
            Format::Ng {
                big_endian: false,
                interfaces: Vec::new(),
            }
        } else {
            let (offset, layout, link_type) = match reader.next() {
                Ok((offset, PcapBlockOwned::LegacyHeader(h))) => {
                    let modified = h.is_modified_format();
                    let layout = PcapLayout {
                        big_endian: h.is_bigendian() && !modified,
                        header_len: if modified { 24 } else { 16 },
                        frac_units: if h.is_nanosecond_precision() {
                            1_000_000_000
                        } else {
                            1_000_000
                        },
                        max_caplen: h.snaplen,
                        habit: None,
                    };
                    (offset, layout, LinkType(h.network.0))
                }
                Ok(_) | Err(_) => {
                    return Err(CaptureError::NotACapture {
                        path: path.to_owned(),
                        reason: "no file header".to_owned(),
                    });
                }
            };
            reader.consume(offset);
            Format::Pcap { layout, link_type }
        };
        Ok(FileReader {
            reader,
            path,
            capacity,
            format,
            summary: FileSummary::default(),
            records: 0,
            time_base: None,
        })
    }

    /// Every step consumes bytes, reads more of the file or grows the buffer (at most up to
    /// [`MAX_BUFFER_BYTES`]), and a step's work is bounded by the buffer's size.
    fn run(&mut self, on_packet: &mut impl FnMut(&RawPacket<'_>)) -> Result<(), CaptureError> {
        let mut mode = Mode::Normal;
        loop {
            let eof = self.reader.reader_exhausted();
            mode = match mode {
                Mode::Normal => match self.frame(eof) {
                    Frame::Record(len) => {
                        self.read_record(len, on_packet);
                        Mode::Normal
                    }
                    Frame::Malformed(len, why) => {
                        self.records += 1;
                        self.refuse_record(len, why);
                        Mode::Normal
                    }
                    Frame::Corrupt(why) => self.lose_framing(why),
                    Frame::NeedBytes(_) if eof => {
                        return if self.reader.data().is_empty() {
                            Ok(())
                        } else {
                            Err(CaptureError::Truncated {
                                path: self.path.to_owned(),
                                record: self.records + 1,
                            })
                        };
                    }
                    Frame::NeedBytes(bytes) => {
                        if self.fill(bytes)? {
                            Mode::Normal
                        } else {
                            self.lose_framing(Corruption::LargerThanReadBuffer)
                        }
                    }
                },
                Mode::Resync { from } => match self.scan(from, eof) {
                    Scan::Found(at) => {
                        self.skip(at);
                        Mode::Normal
                    }
                    Scan::NeedBytes { at, bytes } => {
                        self.skip(at);
                        if self.fill(bytes)? {
                            Mode::Resync { from: 0 }
                        } else {
                            // Cannot be judged: refuse it and go on.
                            Mode::Resync { from: 1 }
                        }
                    }
                    Scan::NotFound => {
                        self.skip(self.reader.data().len());
                        if eof {
                            return Ok(());
                        }
                        self.fill(1)?;
                        Mode::Resync { from: 0 }
                    }
                },
            };
        }
    }

    fn frame(&self, eof: bool) -> Frame {
        let data = self.reader.data();
        match &self.format {
            Format::Pcap { layout, .. } => framing::pcap_frame(data, layout, eof, self.time_base),
            Format::Ng {
                big_endian,
                interfaces,
            } => framing::ng_frame(
                data,
                &NgSection {
                    big_endian: *big_endian,
                    interfaces: interfaces.len(),
                },
                eof,
            ),
        }
    }

    fn scan(&self, from: usize, eof: bool) -> Scan {
        let data = self.reader.data();
        let range = from..data.len();
        match &self.format {
            Format::Pcap { layout, .. } => {
                framing::pcap_scan(data, range, layout, eof, self.time_base)
            }
            Format::Ng {
                big_endian,
                interfaces,
            } => framing::ng_scan(
                data,
                range,
                &NgSection {
                    big_endian: *big_endian,
                    interfaces: interfaces.len(),
                },
                eof,
            ),
        }
    }

    /// Makes the buffer hold `bytes` bytes (or reach the end of the file) over one or more
    /// calls. `false`: it cannot, the record is too large to judge.
    fn fill(&mut self, bytes: usize) -> Result<bool, CaptureError> {
        let before = self.reader.data().len();
        if bytes > MAX_BUFFER_BYTES || bytes <= before {
            // The second case would be a framing bug; refusing keeps the loop moving.
            return Ok(false);
        }
        if before >= self.capacity {
            // Full: double it. Growing only once the bytes are there keeps a bogus length in a
            // small file from allocating what it claims.
            let grown = self.capacity.saturating_mul(2).min(MAX_BUFFER_BYTES);
            if self.reader.grow(grown) {
                self.capacity = grown;
            }
        }
        if self.reader.refill().is_err() {
            return Err(CaptureError::Read {
                path: self.path.to_owned(),
                record: self.records,
            });
        }
        Ok(self.reader.data().len() > before || self.reader.reader_exhausted())
    }

    fn offset(&self) -> u64 {
        self.reader.consumed() as u64
    }

    fn note_corruption(&mut self, why: Corruption) {
        self.summary.corrupt_records += 1;
        if self.summary.first_corruption.is_none() {
            self.summary.first_corruption = Some((self.offset(), why));
        }
    }

    fn lose_framing(&mut self, why: Corruption) -> Mode {
        self.note_corruption(why);
        self.summary.resynchronisations += 1;
        Mode::Resync { from: 1 }
    }

    fn refuse_record(&mut self, len: usize, why: Corruption) {
        self.note_corruption(why);
        self.skip(len);
    }

    fn skip(&mut self, bytes: usize) {
        self.summary.skipped_bytes += bytes as u64;
        self.reader.consume(bytes);
    }

    /// Parses the whole, believable record of `len` bytes at the start of the buffer and
    /// delivers it; a record the parser refuses anyway is skipped whole.
    fn read_record(&mut self, len: usize, on_packet: &mut impl FnMut(&RawPacket<'_>)) {
        let description = self.is_interface_description();
        if let Format::Pcap { layout, .. } = &mut self.format
            && let Some((ts_sec, habit)) = framing::pcap_confirmed(self.reader.data(), layout)
        {
            self.time_base = Some(ts_sec);
            if habit.is_some() {
                layout.habit = habit;
            }
        }
        let outcome = match self.reader.next() {
            Ok((offset, block)) if offset == len => {
                handle_block(block, &mut self.format, on_packet)
            }
            Ok(_) | Err(_) => Outcome::Refused(Corruption::UnreadableBlock),
        };
        match outcome {
            Outcome::Packet => {
                self.records += 1;
                self.summary.packets += 1;
                self.reader.consume(len);
            }
            Outcome::Other => self.reader.consume(len),
            Outcome::Refused(why) => {
                if description {
                    // Keep the numbers of the interfaces after it.
                    if let Format::Ng { interfaces, .. } = &mut self.format
                        && interfaces.len() < MAX_INTERFACES
                    {
                        interfaces.push(None);
                    }
                } else {
                    self.records += 1;
                }
                self.refuse_record(len, why);
            }
        }
    }

    fn is_interface_description(&self) -> bool {
        let Format::Ng { big_endian, .. } = self.format else {
            return false;
        };
        let Some(&bytes) = self.reader.data().first_chunk::<4>() else {
            return false;
        };
        let block_type = if big_endian {
            u32::from_be_bytes(bytes)
        } else {
            u32::from_le_bytes(bytes)
        };
        block_type == pcap_parser::IDB_MAGIC
    }
}

enum Outcome {
    /// A packet was delivered.
    Packet,
    /// A block that carries no packet (section, interface, statistics, unknown type).
    Other,
    Refused(Corruption),
}

fn handle_block(
    block: PcapBlockOwned<'_>,
    format: &mut Format,
    on_packet: &mut impl FnMut(&RawPacket<'_>),
) -> Outcome {
    match (block, format) {
        (PcapBlockOwned::Legacy(b), Format::Pcap { layout, link_type }) => {
            if layout.max_caplen != 0 {
                layout.max_caplen = layout.max_caplen.max(b.caplen);
            }
            let frac_nanos = if layout.frac_units == 1_000_000 {
                b.ts_usec.saturating_mul(1000)
            } else {
                b.ts_usec
            };
            let caplen = usize::try_from(b.caplen).unwrap_or(usize::MAX);
            on_packet(&RawPacket {
                ts: Timestamp::from_secs_nanos(i64::from(b.ts_sec), frac_nanos),
                link_type: *link_type,
                data: b.data.get(..caplen).unwrap_or(b.data),
                orig_len: b.origlen,
            });
            Outcome::Packet
        }
        (
            PcapBlockOwned::NG(block),
            Format::Ng {
                big_endian,
                interfaces,
            },
        ) => handle_ng_block(block, big_endian, interfaces, on_packet),
        _ => Outcome::Refused(Corruption::UnreadableBlock),
    }
}

fn handle_ng_block(
    block: Block<'_>,
    big_endian: &mut bool,
    interfaces: &mut Vec<Option<Interface>>,
    on_packet: &mut impl FnMut(&RawPacket<'_>),
) -> Outcome {
    match block {
        Block::SectionHeader(shb) => {
            *big_endian = shb.big_endian();
            interfaces.clear();
            Outcome::Other
        }
        Block::InterfaceDescription(idb) => {
            if interfaces.len() >= MAX_INTERFACES {
                return Outcome::Refused(Corruption::TooManyInterfaces);
            }
            interfaces.push(Some(Interface {
                link_type: LinkType(idb.linktype.0),
                resolution: idb.ts_resolution().unwrap_or(1_000_000).max(1),
                offset_secs: idb.ts_offset(),
                snaplen: idb.snaplen,
            }));
            Outcome::Other
        }
        Block::EnhancedPacket(epb) => {
            let Some(Some(iface)) = usize::try_from(epb.if_id)
                .ok()
                .and_then(|i| interfaces.get(i))
            else {
                return Outcome::Refused(Corruption::UndeclaredInterface);
            };
            let raw_ts = (u64::from(epb.ts_high) << 32) | u64::from(epb.ts_low);
            on_packet(&RawPacket {
                ts: ng_timestamp(raw_ts, iface),
                link_type: iface.link_type,
                data: epb.packet_data(),
                orig_len: epb.origlen,
            });
            Outcome::Packet
        }
        Block::SimplePacket(spb) => {
            let Some(Some(iface)) = interfaces.first() else {
                return Outcome::Refused(Corruption::UndeclaredInterface);
            };
            // An SPB carries no timestamp and is cut at the interface's snaplen.
            let data = spb.packet_data();
            let keep = if iface.snaplen == 0 {
                data.len()
            } else {
                data.len().min(iface.snaplen as usize)
            };
            on_packet(&RawPacket {
                ts: Timestamp::default(),
                link_type: iface.link_type,
                data: data.get(..keep).unwrap_or(data),
                orig_len: spb.origlen,
            });
            Outcome::Packet
        }
        _ => Outcome::Other,
    }
}

fn ng_timestamp(raw: u64, iface: &Interface) -> Timestamp {
    let secs = i64::try_from(raw / iface.resolution).unwrap_or(i64::MAX);
    let frac = u128::from(raw % iface.resolution);
    let micros = (frac * 1_000_000 / u128::from(iface.resolution)) as i64;
    Timestamp::from_micros(
        secs.saturating_add(iface.offset_secs)
            .saturating_mul(1_000_000)
            .saturating_add(micros),
    )
}
