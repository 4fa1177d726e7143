//! Streaming reader for pcap (µs and ns, both byte orders) and pcapng (several interfaces and
//! sections, EPB and SPB) files. Memory stays bounded whatever the file size: the reader keeps
//! one circular buffer that grows only as far as the largest record allows.

use std::fs::File;
use std::path::{Path, PathBuf};

use pcap_parser::pcapng::Block;
use pcap_parser::traits::PcapNGPacketBlock;
use pcap_parser::{PcapBlockOwned, PcapError, create_reader};

use super::{LinkType, RawPacket};
use mamori_models::Timestamp;

const INITIAL_BUFFER_BYTES: usize = 256 * 1024;
/// The largest record we accept; a bigger one is treated as corruption.
const MAX_RECORD_BYTES: usize = 16 * 1024 * 1024;

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
    #[error("{path}: record {record}: corrupt ({reason})")]
    Corrupt {
        path: PathBuf,
        record: u64,
        reason: String,
    },
    #[error("{path}: read error after record {record}")]
    Read { path: PathBuf, record: u64 },
}

/// What was read from one file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FileSummary {
    /// Packet records delivered.
    pub packets: u64,
    /// Packet records for an interface whose link type we do not decode.
    pub unsupported_link: u64,
}

#[derive(Clone, Copy, Debug)]
struct Interface {
    link_type: LinkType,
    /// Timestamp units per second.
    resolution: u64,
    offset_secs: i64,
    snaplen: u32,
}

/// Reads every packet of `path` in file order and hands it to `on_packet`. Everything before a
/// truncated or corrupt record is delivered before the error is returned.
pub fn read_capture_file(
    path: &Path,
    mut on_packet: impl FnMut(&RawPacket<'_>),
) -> Result<FileSummary, CaptureError> {
    let file = File::open(path).map_err(|source| CaptureError::Open {
        path: path.to_owned(),
        source,
    })?;
    let mut reader = match create_reader(INITIAL_BUFFER_BYTES, file) {
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
    let mut summary = FileSummary::default();
    let mut record: u64 = 0;
    let mut legacy: Option<(LinkType, bool)> = None;
    let mut interfaces: Vec<Interface> = Vec::new();
    let mut capacity = INITIAL_BUFFER_BYTES;
    loop {
        match reader.next() {
            Ok((offset, block)) => {
                match block {
                    PcapBlockOwned::LegacyHeader(h) => {
                        legacy = Some((LinkType(h.network.0), h.is_nanosecond_precision()));
                    }
                    PcapBlockOwned::Legacy(b) => {
                        record += 1;
                        let Some((link_type, nanos)) = legacy else {
                            return Err(corrupt(path, record, "packet before the file header"));
                        };
                        let frac_nanos = if nanos {
                            b.ts_usec
                        } else {
                            b.ts_usec.saturating_mul(1000)
                        };
                        let caplen = usize::try_from(b.caplen).unwrap_or(usize::MAX);
                        let data = b.data.get(..caplen).unwrap_or(b.data);
                        summary.packets += 1;
                        on_packet(&RawPacket {
                            ts: Timestamp::from_secs_nanos(i64::from(b.ts_sec), frac_nanos),
                            link_type,
                            data,
                            orig_len: b.origlen,
                        });
                    }
                    PcapBlockOwned::NG(Block::SectionHeader(_)) => interfaces.clear(),
                    PcapBlockOwned::NG(Block::InterfaceDescription(idb)) => {
                        interfaces.push(Interface {
                            link_type: LinkType(idb.linktype.0),
                            resolution: idb.ts_resolution().unwrap_or(1_000_000).max(1),
                            offset_secs: idb.ts_offset(),
                            snaplen: idb.snaplen,
                        });
                    }
                    PcapBlockOwned::NG(Block::EnhancedPacket(epb)) => {
                        record += 1;
                        let Some(iface) = usize::try_from(epb.if_id)
                            .ok()
                            .and_then(|i| interfaces.get(i))
                        else {
                            return Err(corrupt(
                                path,
                                record,
                                "packet for an undeclared interface",
                            ));
                        };
                        let raw_ts = (u64::from(epb.ts_high) << 32) | u64::from(epb.ts_low);
                        summary.packets += 1;
                        on_packet(&RawPacket {
                            ts: ng_timestamp(raw_ts, iface),
                            link_type: iface.link_type,
                            data: epb.packet_data(),
                            orig_len: epb.origlen,
                        });
                    }
                    PcapBlockOwned::NG(Block::SimplePacket(spb)) => {
                        record += 1;
                        let Some(iface) = interfaces.first() else {
                            return Err(corrupt(
                                path,
                                record,
                                "simple packet block without an interface",
                            ));
                        };
                        // An SPB carries no timestamp and is cut at the interface's snaplen.
                        let data = spb.packet_data();
                        let keep = if iface.snaplen == 0 {
                            data.len()
                        } else {
                            data.len().min(iface.snaplen as usize)
                        };
                        summary.packets += 1;
                        on_packet(&RawPacket {
                            ts: Timestamp::default(),
                            link_type: iface.link_type,
                            data: data.get(..keep).unwrap_or(data),
                            orig_len: spb.origlen,
                        });
                    }
                    PcapBlockOwned::NG(_) => {}
                }
                reader.consume(offset);
            }
            Err(PcapError::Eof) => return Ok(summary),
            Err(PcapError::Incomplete(_)) => {
                if reader.reader_exhausted() {
                    // Trailing bytes that do not form a whole record.
                    return Err(CaptureError::Truncated {
                        path: path.to_owned(),
                        record: record + 1,
                    });
                }
                let before = reader.data().len();
                if reader.refill().is_err() {
                    return Err(CaptureError::Read {
                        path: path.to_owned(),
                        record,
                    });
                }
                if reader.data().len() == before && !reader.reader_exhausted() {
                    // The buffer is full and still holds no whole record: grow it, within reason.
                    if capacity >= MAX_RECORD_BYTES {
                        return Err(corrupt(path, record + 1, "record larger than 16 MiB"));
                    }
                    capacity = (capacity * 2).min(MAX_RECORD_BYTES);
                    if !reader.grow(capacity) {
                        return Err(corrupt(
                            path,
                            record + 1,
                            "record larger than the read buffer",
                        ));
                    }
                }
            }
            Err(PcapError::UnexpectedEof) => {
                return Err(CaptureError::Truncated {
                    path: path.to_owned(),
                    record: record + 1,
                });
            }
            Err(e) => return Err(corrupt(path, record + 1, &e.to_string())),
        }
    }
}

fn corrupt(path: &Path, record: u64, reason: &str) -> CaptureError {
    CaptureError::Corrupt {
        path: path.to_owned(),
        record,
        reason: reason.to_owned(),
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
