//! Capture input: pcap and pcapng files (`file`), live AF_PACKET capture (`live`), both as
//! [`RawPacket`]s; the link/network/transport decoding of one frame (`decode`) and IPv4
//! fragment reassembly (`defrag`).

pub mod decode;
pub mod defrag;
pub mod file;
pub mod live;

pub use decode::{DecodeError, Decoded, L4, TcpFlags, decode_frame};
pub use file::{
    CaptureError, Corruption, FileSummary, read_capture, read_capture_file,
    read_capture_file_with_summary,
};

use mamori_models::Timestamp;

/// A link-layer type as stored in pcap headers (the `LINKTYPE_*` numbers of tcpdump.org).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LinkType(pub i32);

impl LinkType {
    pub const NULL: LinkType = LinkType(0);
    pub const ETHERNET: LinkType = LinkType(1);
    /// `DLT_RAW` as OpenBSD numbers it.
    pub const RAW_OPENBSD: LinkType = LinkType(14);
    pub const RAW_12: LinkType = LinkType(12);
    pub const RAW: LinkType = LinkType(101);
    pub const LOOP: LinkType = LinkType(108);
    pub const LINUX_SLL: LinkType = LinkType(113);
    pub const IPV4: LinkType = LinkType(228);
    pub const IPV6: LinkType = LinkType(229);
    pub const LINUX_SLL2: LinkType = LinkType(276);
}

/// One captured frame, borrowed from the reader's buffer.
#[derive(Clone, Copy, Debug)]
pub struct RawPacket<'a> {
    pub ts: Timestamp,
    pub link_type: LinkType,
    /// The captured bytes (possibly fewer than were on the wire: see `orig_len`).
    pub data: &'a [u8],
    pub orig_len: u32,
}
