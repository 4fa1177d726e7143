//! Synthetic captures: a classic pcap writer (microsecond timestamps) and a TCP conversation
//! synthesiser that turns the application messages of one connection into frames with correct
//! sequence and acknowledgement numbers and valid checksums (built by `etherparse`).
//!
//! [`synthesise`] lays the same messages out in any [`Shape`]: one message per segment,
//! messages split or coalesced, retransmitted, overlapping, out of order, picked up mid-stream,
//! with a segment missing, over Ethernet, 802.1Q or Linux cooked capture. The messages are opaque
//! bytes here; only their boundaries matter.

use std::net::{IpAddr, SocketAddr};

use etherparse::PacketBuilder;

/// `LINKTYPE_ETHERNET`.
pub const LINKTYPE_ETHERNET: u32 = 1;
/// `LINKTYPE_LINUX_SLL` (Linux cooked capture v1).
pub const LINKTYPE_LINUX_SLL: u32 = 113;

const PCAP_MAGIC_MICROS: u32 = 0xA1B2_C3D4;
const SNAPLEN: u32 = 65_535;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86DD;
const ETHERTYPE_VLAN: u16 = 0x8100;
const TCP_WINDOW: u16 = 64_240;
const TTL: u8 = 64;

/// A classic pcap file being written in memory (little-endian, microsecond timestamps).
#[derive(Debug)]
pub struct PcapWriter {
    bytes: Vec<u8>,
}

impl PcapWriter {
    pub fn new(link_type: u32) -> Self {
        let mut bytes = Vec::with_capacity(4096);
        bytes.extend_from_slice(&PCAP_MAGIC_MICROS.to_le_bytes());
        bytes.extend_from_slice(&2u16.to_le_bytes()); // version major
        bytes.extend_from_slice(&4u16.to_le_bytes()); // version minor
        bytes.extend_from_slice(&0i32.to_le_bytes()); // thiszone
        bytes.extend_from_slice(&0u32.to_le_bytes()); // sigfigs
        bytes.extend_from_slice(&SNAPLEN.to_le_bytes());
        bytes.extend_from_slice(&link_type.to_le_bytes());
        PcapWriter { bytes }
    }

    /// Appends one whole frame captured at `ts_us` (microseconds since the epoch).
    pub fn packet(&mut self, ts_us: i64, frame: &[u8]) {
        let secs = u32::try_from(ts_us.div_euclid(1_000_000)).unwrap_or(u32::MAX);
        let micros = u32::try_from(ts_us.rem_euclid(1_000_000)).unwrap_or(0);
        let len = u32::try_from(frame.len()).unwrap_or(u32::MAX);
        self.bytes.extend_from_slice(&secs.to_le_bytes());
        self.bytes.extend_from_slice(&micros.to_le_bytes());
        self.bytes.extend_from_slice(&len.to_le_bytes()); // captured length
        self.bytes.extend_from_slice(&len.to_le_bytes()); // original length
        self.bytes.extend_from_slice(frame);
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

/// The link layer frames are wrapped in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    Ethernet,
    /// Ethernet with one 802.1Q tag carrying this VLAN id.
    Vlan(u16),
    /// Linux cooked capture v1 (what `tcpdump -i any` writes).
    LinuxSll,
}

impl Link {
    pub fn link_type(self) -> u32 {
        match self {
            Link::Ethernet | Link::Vlan(_) => LINKTYPE_ETHERNET,
            Link::LinuxSll => LINKTYPE_LINUX_SLL,
        }
    }
}

/// Which end of the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    Client,
    Server,
}

impl Side {
    fn idx(self) -> usize {
        match self {
            Side::Client => 0,
            Side::Server => 1,
        }
    }

    pub fn other(self) -> Side {
        match self {
            Side::Client => Side::Server,
            Side::Server => Side::Client,
        }
    }
}

/// What one side put on the wire, as a flow event counts it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SideStats {
    pub packets: u64,
    /// TCP payload bytes, retransmissions included.
    pub payload_bytes: u64,
}

/// TCP header flags of one segment (ACK is set whenever an acknowledgement number is given).
#[derive(Clone, Copy, Debug, Default)]
struct Flags {
    syn: bool,
    psh: bool,
    fin: bool,
    rst: bool,
}

/// One TCP connection being written frame by frame. Sequence numbers are kept per side as
/// stream offsets (bytes sent so far); the wire value is `isn + 1 + offset`.
#[derive(Debug)]
pub struct TcpConversation {
    link: Link,
    client: SocketAddr,
    server: SocketAddr,
    isn: [u32; 2],
    /// Next stream offset each side sends.
    sent: [u64; 2],
    /// Whether each side sent its FIN (it takes one sequence number).
    fin_sent: [bool; 2],
    clock_us: i64,
    step_us: i64,
    frames: Vec<(i64, Vec<u8>)>,
    stats: [SideStats; 2],
}

const CLIENT_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x0C];
const SERVER_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x05];

impl TcpConversation {
    /// A conversation whose first frame is at `start_us`; every frame advances the clock by
    /// `step_us`.
    pub fn new(
        link: Link,
        client: SocketAddr,
        server: SocketAddr,
        start_us: i64,
        step_us: i64,
    ) -> Self {
        TcpConversation {
            link,
            client,
            server,
            // Fixed and far from zero, so that a decoder that mixes up the two sides or
            // forgets the SYN's sequence number shows it.
            isn: [0x1A2B_3C4D, 0xF00D_0000],
            sent: [0, 0],
            fin_sent: [false, false],
            clock_us: start_us,
            step_us,
            frames: Vec::new(),
            stats: [SideStats::default(); 2],
        }
    }

    /// Starts the sequence space of `side` at `isn` (before any frame is written).
    pub fn set_isn(&mut self, side: Side, isn: u32) {
        if let Some(v) = self.isn.get_mut(side.idx()) {
            *v = isn;
        }
    }

    pub fn stats(&self, side: Side) -> SideStats {
        self.stats.get(side.idx()).copied().unwrap_or_default()
    }

    /// The capture time of the next frame.
    pub fn now_us(&self) -> i64 {
        self.clock_us
    }

    /// Lets `us` microseconds pass with nothing on the wire.
    pub fn pause(&mut self, us: i64) {
        self.clock_us += us;
    }

    fn seq_at(&self, side: Side, offset: u64) -> u32 {
        let isn = self.isn.get(side.idx()).copied().unwrap_or_default();
        isn.wrapping_add(1).wrapping_add(offset as u32)
    }

    /// What `side` acknowledges: everything the other side sent so far (and its FIN).
    fn ack_of(&self, side: Side) -> u32 {
        let other = side.other();
        let fin = u32::from(self.fin_sent.get(other.idx()).copied().unwrap_or(false));
        let sent = self.sent.get(other.idx()).copied().unwrap_or_default();
        self.seq_at(other, sent).wrapping_add(fin)
    }

    fn offset(&self, side: Side) -> u64 {
        self.sent.get(side.idx()).copied().unwrap_or_default()
    }

    fn emit(&mut self, from: Side, seq: u32, ack: Option<u32>, flags: Flags, payload: &[u8]) {
        let (src, dst) = match from {
            Side::Client => (self.client, self.server),
            Side::Server => (self.server, self.client),
        };
        let ip_packet = build_ip_tcp(src, dst, seq, ack, flags, payload);
        let ethertype = if src.is_ipv4() {
            ETHERTYPE_IPV4
        } else {
            ETHERTYPE_IPV6
        };
        let (src_mac, dst_mac) = match from {
            Side::Client => (CLIENT_MAC, SERVER_MAC),
            Side::Server => (SERVER_MAC, CLIENT_MAC),
        };
        let mut frame = Vec::with_capacity(ip_packet.len() + 20);
        match self.link {
            Link::Ethernet => {
                frame.extend_from_slice(&dst_mac);
                frame.extend_from_slice(&src_mac);
                frame.extend_from_slice(&ethertype.to_be_bytes());
            }
            Link::Vlan(vid) => {
                frame.extend_from_slice(&dst_mac);
                frame.extend_from_slice(&src_mac);
                frame.extend_from_slice(&ETHERTYPE_VLAN.to_be_bytes());
                frame.extend_from_slice(&(vid & 0x0FFF).to_be_bytes()); // PCP 0, DEI 0, VID
                frame.extend_from_slice(&ethertype.to_be_bytes());
            }
            Link::LinuxSll => {
                // Captured on the client host: its own frames are "outgoing" (4), the
                // server's "to us" (0).
                let packet_type: u16 = if from == Side::Client { 4 } else { 0 };
                frame.extend_from_slice(&packet_type.to_be_bytes());
                frame.extend_from_slice(&1u16.to_be_bytes()); // ARPHRD_ETHER
                frame.extend_from_slice(&6u16.to_be_bytes()); // address length
                frame.extend_from_slice(&src_mac);
                frame.extend_from_slice(&[0, 0]); // address padding to 8 bytes
                frame.extend_from_slice(&ethertype.to_be_bytes());
            }
        }
        frame.extend_from_slice(&ip_packet);
        if let Some(s) = self.stats.get_mut(from.idx()) {
            s.packets += 1;
            s.payload_bytes += payload.len() as u64;
        }
        self.frames.push((self.clock_us, frame));
        self.clock_us += self.step_us;
    }

    /// SYN, SYN-ACK, ACK.
    pub fn handshake(&mut self) {
        let syn = Flags {
            syn: true,
            ..Flags::default()
        };
        self.emit(
            Side::Client,
            self.seq_at(Side::Client, 0).wrapping_sub(1),
            None,
            syn,
            &[],
        );
        let syn_ack = Flags {
            syn: true,
            ..Flags::default()
        };
        let ack = self.seq_at(Side::Client, 0);
        self.emit(
            Side::Server,
            self.seq_at(Side::Server, 0).wrapping_sub(1),
            Some(ack),
            syn_ack,
            &[],
        );
        self.ack(Side::Client);
    }

    /// One data segment with the next bytes of `from`'s stream (PSH|ACK).
    pub fn data(&mut self, from: Side, bytes: &[u8]) {
        let off = self.offset(from);
        self.segment_at(from, off, bytes);
        if let Some(s) = self.sent.get_mut(from.idx()) {
            *s += bytes.len() as u64;
        }
    }

    /// A data segment at stream offset `offset` of `from`'s stream, without moving the
    /// stream on: a retransmission, an overlap, or a segment sent ahead of a hole.
    pub fn segment_at(&mut self, from: Side, offset: u64, bytes: &[u8]) {
        let flags = Flags {
            psh: true,
            ..Flags::default()
        };
        let ack = self.ack_of(from);
        self.emit(from, self.seq_at(from, offset), Some(ack), flags, bytes);
    }

    /// Moves `from`'s stream on by `n` bytes that never reach the capture.
    pub fn lose(&mut self, from: Side, n: u64) {
        if let Some(s) = self.sent.get_mut(from.idx()) {
            *s += n;
        }
    }

    /// Marks `n` bytes of `from`'s stream as sent (the segment is written later with
    /// [`Self::segment_at`]).
    pub fn advance(&mut self, from: Side, n: u64) {
        self.lose(from, n);
    }

    /// A pure ACK of everything the other side sent.
    pub fn ack(&mut self, from: Side) {
        let flags = Flags::default();
        let ack = self.ack_of(from);
        let fin = self.fin_sent.get(from.idx()).copied().unwrap_or(false);
        let seq = self
            .seq_at(from, self.offset(from))
            .wrapping_add(u32::from(fin));
        self.emit(from, seq, Some(ack), flags, &[]);
    }

    /// FIN|ACK from `from`.
    pub fn fin(&mut self, from: Side) {
        let flags = Flags {
            fin: true,
            ..Flags::default()
        };
        let ack = self.ack_of(from);
        self.emit(
            from,
            self.seq_at(from, self.offset(from)),
            Some(ack),
            flags,
            &[],
        );
        if let Some(f) = self.fin_sent.get_mut(from.idx()) {
            *f = true;
        }
    }

    /// RST|ACK from `from`.
    pub fn rst(&mut self, from: Side) {
        let flags = Flags {
            rst: true,
            ..Flags::default()
        };
        let ack = self.ack_of(from);
        self.emit(
            from,
            self.seq_at(from, self.offset(from)),
            Some(ack),
            flags,
            &[],
        );
    }

    /// The whole conversation as a pcap file.
    pub fn to_pcap(&self) -> Vec<u8> {
        let mut w = PcapWriter::new(self.link.link_type());
        for (ts, frame) in &self.frames {
            w.packet(*ts, frame);
        }
        w.into_bytes()
    }

    pub fn frame_count(&self) -> usize {
        self.frames.len()
    }
}

fn build_ip_tcp(
    src: SocketAddr,
    dst: SocketAddr,
    seq: u32,
    ack: Option<u32>,
    flags: Flags,
    payload: &[u8],
) -> Vec<u8> {
    let ip = match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => PacketBuilder::ipv4(s.octets(), d.octets(), TTL),
        (IpAddr::V6(s), IpAddr::V6(d)) => PacketBuilder::ipv6(s.octets(), d.octets(), TTL),
        // Mixed families cannot share a connection; keep the frame well formed anyway.
        (s, d) => PacketBuilder::ipv6(v6(s), v6(d), TTL),
    };
    let mut b = ip.tcp(src.port(), dst.port(), seq, TCP_WINDOW);
    if flags.syn {
        b = b.syn();
    }
    if let Some(a) = ack {
        b = b.ack(a);
    }
    if flags.psh {
        b = b.psh();
    }
    if flags.fin {
        b = b.fin();
    }
    if flags.rst {
        b = b.rst();
    }
    let mut out = Vec::with_capacity(b.size(payload.len()));
    // Writing to a Vec only fails on a payload too large for the IP length field.
    if b.write(&mut out, payload).is_err() {
        out.clear();
    }
    out
}

fn v6(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        IpAddr::V6(a) => a.octets(),
    }
}

/// One application message (one Modbus ADU) and who sent it, in the order of the dialogue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub from: Side,
    pub bytes: Vec<u8>,
}

/// How the connection starts in the capture.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opening {
    /// SYN, SYN-ACK, ACK, then the dialogue.
    Handshake,
    /// No handshake: the capture starts with the data of message `first_message` (the ones
    /// before it happened before the capture started).
    Midstream { first_message: usize },
}

/// How the messages are cut into segments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Segmentation {
    /// Each message in its own segment, acknowledged by the peer.
    OnePerSegment,
    /// Each message cut into `parts` segments (as evenly as its length allows; the first cut
    /// falls inside the 7-byte MBAP header).
    Split { parts: usize },
    /// The dialogue taken `messages` messages at a time: in each window the client's messages
    /// go out in one segment, then the server's in one segment (pipelining).
    Coalesced { messages: usize },
    /// Every `every`-th data segment is sent twice (identical retransmission).
    Retransmitted { every: usize },
    /// Each message first goes out with only its first half; then the whole message is
    /// retransmitted from the same sequence number (an overlap that carries more).
    OverlappingRetransmission,
    /// Each message in two segments, the second half sent first.
    OutOfOrder,
    /// The segment carrying message `message` is missing from the capture; the peer's ACK
    /// acknowledges past it.
    Lost { message: usize },
    /// The first `bytes` bytes of message `message` are missing from the capture (its header
    /// is lost, the rest arrives); the peer's ACK acknowledges past them.
    LostHead { message: usize, bytes: usize },
}

/// How the connection ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// The client closes: FIN, FIN-ACK, ACK.
    Fin,
    /// The client resets the connection.
    ClientRst,
    /// The capture stops with the connection still open.
    Open,
}

/// Everything that shapes one synthetic capture of a dialogue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    pub link: Link,
    pub client: SocketAddr,
    pub server: SocketAddr,
    pub opening: Opening,
    pub segmentation: Segmentation,
    pub ending: Ending,
    /// Capture time of the first frame, microseconds since the epoch.
    pub start_us: i64,
    /// Time between frames.
    pub step_us: i64,
}

impl Shape {
    /// Ethernet, IPv4, handshake, one message per segment, FIN.
    pub fn baseline(client: SocketAddr, server: SocketAddr) -> Self {
        Shape {
            link: Link::Ethernet,
            client,
            server,
            opening: Opening::Handshake,
            segmentation: Segmentation::OnePerSegment,
            ending: Ending::Fin,
            // 2024-03-01T00:00:00Z
            start_us: 1_709_251_200_000_000,
            step_us: 250,
        }
    }
}

/// A synthesised capture and what the generator knows about it.
#[derive(Clone, Debug)]
pub struct Capture {
    pub pcap: Vec<u8>,
    pub client: SideStats,
    pub server: SideStats,
    /// For each message, the capture time of the frame that carried its first byte (the
    /// first time that byte was on the wire; `None` for messages lost or sent before a
    /// mid-stream start). Zeek stamps a PDU so, and so does the agent.
    pub first_byte_at_us: Vec<Option<i64>>,
    pub frames: usize,
}

/// Lays `dialogue` out as a capture of the given shape.
pub fn synthesise(dialogue: &[Message], shape: &Shape) -> Capture {
    let mut c = TcpConversation::new(
        shape.link,
        shape.client,
        shape.server,
        shape.start_us,
        shape.step_us,
    );
    let mut stamped: Vec<Option<i64>> = vec![None; dialogue.len()];
    let first = match shape.opening {
        Opening::Handshake => {
            c.handshake();
            0
        }
        Opening::Midstream { first_message } => {
            for m in dialogue.iter().take(first_message) {
                c.lose(m.from, m.bytes.len() as u64);
            }
            first_message
        }
    };
    let rest: Vec<(usize, &Message)> = dialogue.iter().enumerate().skip(first).collect();
    match shape.segmentation {
        Segmentation::Coalesced { messages } => {
            for window in rest.chunks(messages.max(1)) {
                for side in [Side::Client, Side::Server] {
                    let mine: Vec<&(usize, &Message)> =
                        window.iter().filter(|(_, m)| m.from == side).collect();
                    if mine.is_empty() {
                        continue;
                    }
                    let bytes: Vec<u8> = mine
                        .iter()
                        .flat_map(|(_, m)| m.bytes.iter().copied())
                        .collect();
                    for (i, _) in &mine {
                        stamp(&mut stamped, *i, c.now_us());
                    }
                    c.data(side, &bytes);
                }
                c.ack(Side::Client);
            }
        }
        seg => {
            let mut data_segments = 0usize;
            for &(i, m) in &rest {
                let from = m.from;
                let len = m.bytes.len();
                match seg {
                    Segmentation::OnePerSegment | Segmentation::Coalesced { .. } => {
                        stamp(&mut stamped, i, c.now_us());
                        c.data(from, &m.bytes);
                    }
                    Segmentation::Split { parts } => {
                        for piece in split_points(len, parts).windows(2) {
                            let (a, b) = (
                                piece.first().copied().unwrap_or(0),
                                piece.get(1).copied().unwrap_or(0),
                            );
                            if a == 0 {
                                stamp(&mut stamped, i, c.now_us());
                            }
                            c.data(from, m.bytes.get(a..b).unwrap_or_default());
                        }
                    }
                    Segmentation::Retransmitted { every } => {
                        let off = c.offset(from);
                        stamp(&mut stamped, i, c.now_us());
                        c.data(from, &m.bytes);
                        data_segments += 1;
                        if every > 0 && data_segments.is_multiple_of(every) {
                            c.segment_at(from, off, &m.bytes);
                        }
                    }
                    Segmentation::OverlappingRetransmission => {
                        let off = c.offset(from);
                        let half = len / 2;
                        stamp(&mut stamped, i, c.now_us());
                        c.segment_at(from, off, m.bytes.get(..half).unwrap_or_default());
                        c.data(from, &m.bytes);
                    }
                    Segmentation::OutOfOrder => {
                        let off = c.offset(from);
                        let half = len / 2;
                        c.advance(from, len as u64);
                        c.segment_at(
                            from,
                            off + half as u64,
                            m.bytes.get(half..).unwrap_or_default(),
                        );
                        stamp(&mut stamped, i, c.now_us());
                        c.segment_at(from, off, m.bytes.get(..half).unwrap_or_default());
                    }
                    Segmentation::Lost { message } => {
                        if i == message {
                            c.lose(from, len as u64);
                        } else {
                            stamp(&mut stamped, i, c.now_us());
                            c.data(from, &m.bytes);
                        }
                    }
                    Segmentation::LostHead { message, bytes } => {
                        if i == message {
                            let cut = bytes.min(len);
                            c.lose(from, cut as u64);
                            c.data(from, m.bytes.get(cut..).unwrap_or_default());
                        } else {
                            stamp(&mut stamped, i, c.now_us());
                            c.data(from, &m.bytes);
                        }
                    }
                }
                // The receiver acknowledges each message: on a lost segment this is the ACK
                // that tells a passive observer the bytes existed.
                c.ack(from.other());
            }
        }
    }
    match shape.ending {
        Ending::Fin => {
            c.fin(Side::Client);
            c.fin(Side::Server);
            c.ack(Side::Client);
        }
        Ending::ClientRst => c.rst(Side::Client),
        Ending::Open => {}
    }
    Capture {
        pcap: c.to_pcap(),
        client: c.stats(Side::Client),
        server: c.stats(Side::Server),
        first_byte_at_us: stamped,
        frames: c.frame_count(),
    }
}

fn stamp(stamped: &mut [Option<i64>], message: usize, at_us: i64) {
    if let Some(slot) = stamped.get_mut(message) {
        *slot = Some(at_us);
    }
}

/// Cut points of a `len`-byte message into `parts` pieces: `[0, .., len]`, strictly
/// increasing. The first cut falls at 3 bytes (inside the MBAP header) when it can.
fn split_points(len: usize, parts: usize) -> Vec<usize> {
    let parts = parts.clamp(1, len.max(1));
    let mut points = vec![0];
    if parts > 1 && len > 3 {
        points.push(3);
        let rest = len - 3;
        let more = parts - 2;
        for k in 1..=more {
            let p = 3 + rest * k / (more + 1);
            if p > *points.last().unwrap_or(&0) && p < len {
                points.push(p);
            }
        }
    }
    points.push(len);
    points
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_points_cut_inside_the_header_then_evenly() {
        assert_eq!(split_points(12, 1), vec![0, 12]);
        assert_eq!(split_points(12, 2), vec![0, 3, 12]);
        assert_eq!(split_points(12, 3), vec![0, 3, 7, 12]);
        assert_eq!(split_points(2, 3), vec![0, 2]);
    }

    #[test]
    fn pcap_header_and_record_layout() {
        let mut w = PcapWriter::new(LINKTYPE_ETHERNET);
        w.packet(1_000_002, &[0xAA, 0xBB]);
        let b = w.into_bytes();
        assert_eq!(b.len(), 24 + 16 + 2);
        assert_eq!(b.get(..4), Some(&[0xD4, 0xC3, 0xB2, 0xA1][..]));
        assert_eq!(b.get(24..28), Some(&1u32.to_le_bytes()[..])); // seconds
        assert_eq!(b.get(28..32), Some(&2u32.to_le_bytes()[..])); // microseconds
    }
}
