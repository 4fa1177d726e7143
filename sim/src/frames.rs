//! Frame synthesis for the tap: what the simulated hosts would have put on a switch port,
//! Ethernet II / IPv4 / TCP or UDP with valid checksums (built by `etherparse`). A TCP
//! connection is a [`TcpFlow`]: it keeps each side's sequence space so that the handshake, the
//! data segments, their acknowledgements and the FIN exchange are consistent, the way a passive
//! sensor reassembling the stream expects them.
//!
//! Addresses are the simulated ones (`10.20.0.x`), not the loopback sockets the traffic really
//! crossed; MAC addresses are derived from them (`02:00` + the IPv4 octets, locally
//! administered) so that an asset inventory sees one stable MAC per host.

use std::net::{Ipv4Addr, SocketAddrV4};

use etherparse::PacketBuilder;

/// The largest TCP payload per segment (Ethernet MTU 1500 minus 40 bytes of headers).
pub const MSS: usize = 1460;
const TTL: u8 = 64;
const TCP_WINDOW: u16 = 64_240;

/// The MAC address of a simulated host: locally administered, unicast, from its IPv4 address.
pub fn mac_of(ip: Ipv4Addr) -> [u8; 6] {
    let [a, b, c, d] = ip.octets();
    [0x02, 0x00, a, b, c, d]
}

/// One UDP datagram as an Ethernet frame.
pub fn udp_frame(src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) -> Option<Vec<u8>> {
    let b = PacketBuilder::ethernet2(mac_of(*src.ip()), mac_of(*dst.ip()))
        .ipv4(src.ip().octets(), dst.ip().octets(), TTL)
        .udp(src.port(), dst.port());
    let mut out = Vec::with_capacity(b.size(payload.len()));
    // Writing to a Vec fails only on a payload too large for the IP length field.
    b.write(&mut out, payload).ok()?;
    Some(out)
}

/// Which end of a TCP connection.
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

/// TCP header flags of one segment (ACK is set whenever an acknowledgement number is given).
#[derive(Clone, Copy, Debug, Default)]
struct Flags {
    syn: bool,
    psh: bool,
    fin: bool,
    rst: bool,
}

/// One TCP connection being synthesised. Each side's stream is tracked as an offset (bytes
/// sent so far); the sequence number on the wire is `isn + 1 + offset`.
#[derive(Debug)]
pub struct TcpFlow {
    client: SocketAddrV4,
    server: SocketAddrV4,
    isn: [u32; 2],
    sent: [u64; 2],
    fin_sent: [bool; 2],
}

impl TcpFlow {
    pub fn new(
        client: SocketAddrV4,
        server: SocketAddrV4,
        isn_client: u32,
        isn_server: u32,
    ) -> Self {
        TcpFlow {
            client,
            server,
            isn: [isn_client, isn_server],
            sent: [0, 0],
            fin_sent: [false, false],
        }
    }

    pub fn client(&self) -> SocketAddrV4 {
        self.client
    }

    pub fn server(&self) -> SocketAddrV4 {
        self.server
    }

    /// Whether `side` has sent its FIN.
    pub fn closed(&self, side: Side) -> bool {
        self.fin_sent.get(side.idx()).copied().unwrap_or(true)
    }

    fn offset(&self, side: Side) -> u64 {
        self.sent.get(side.idx()).copied().unwrap_or_default()
    }

    fn seq_at(&self, side: Side, offset: u64) -> u32 {
        let isn = self.isn.get(side.idx()).copied().unwrap_or_default();
        // Sequence numbers wrap modulo 2^32 by definition.
        isn.wrapping_add(1).wrapping_add(offset as u32)
    }

    /// What `side` acknowledges: everything the other side sent so far, and its FIN.
    fn ack_of(&self, side: Side) -> u32 {
        let other = side.other();
        let fin = u32::from(self.closed(other));
        self.seq_at(other, self.offset(other)).wrapping_add(fin)
    }

    /// The next sequence number of `side` (past its FIN once sent).
    fn next_seq(&self, side: Side) -> u32 {
        self.seq_at(side, self.offset(side))
            .wrapping_add(u32::from(self.closed(side)))
    }

    fn segment(
        &self,
        from: Side,
        seq: u32,
        ack: Option<u32>,
        flags: Flags,
        payload: &[u8],
    ) -> Option<Vec<u8>> {
        let (src, dst) = match from {
            Side::Client => (self.client, self.server),
            Side::Server => (self.server, self.client),
        };
        let mut b = PacketBuilder::ethernet2(mac_of(*src.ip()), mac_of(*dst.ip()))
            .ipv4(src.ip().octets(), dst.ip().octets(), TTL)
            .tcp(src.port(), dst.port(), seq, TCP_WINDOW);
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
        b.write(&mut out, payload).ok()?;
        Some(out)
    }

    /// The client's SYN alone (a probe of a host that does not answer).
    pub fn syn(&self) -> Vec<Vec<u8>> {
        let syn = Flags {
            syn: true,
            ..Flags::default()
        };
        let seq = self.seq_at(Side::Client, 0).wrapping_sub(1);
        self.segment(Side::Client, seq, None, syn, &[])
            .into_iter()
            .collect()
    }

    /// SYN, SYN-ACK, ACK.
    pub fn handshake(&self) -> Vec<Vec<u8>> {
        let syn = Flags {
            syn: true,
            ..Flags::default()
        };
        let mut out = self.syn();
        let server_isn = self.seq_at(Side::Server, 0).wrapping_sub(1);
        out.extend(self.segment(
            Side::Server,
            server_isn,
            Some(self.seq_at(Side::Client, 0)),
            syn,
            &[],
        ));
        out.extend(self.ack(Side::Client));
        out
    }

    /// SYN answered by RST-ACK: nothing listens on the port.
    pub fn refused(&self) -> Vec<Vec<u8>> {
        let rst = Flags {
            rst: true,
            ..Flags::default()
        };
        let mut out = self.syn();
        out.extend(self.segment(
            Side::Server,
            0,
            Some(self.seq_at(Side::Client, 0)),
            rst,
            &[],
        ));
        out
    }

    /// A pure ACK from `from` of everything the other side sent.
    fn ack(&self, from: Side) -> Option<Vec<u8>> {
        self.segment(
            from,
            self.next_seq(from),
            Some(self.ack_of(from)),
            Flags::default(),
            &[],
        )
    }

    /// `bytes` from `from`, in segments of at most [`MSS`] (PSH|ACK), each acknowledged by the
    /// peer.
    pub fn data(&mut self, from: Side, bytes: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let psh = Flags {
            psh: true,
            ..Flags::default()
        };
        for piece in bytes.chunks(MSS) {
            let seq = self.seq_at(from, self.offset(from));
            out.extend(self.segment(from, seq, Some(self.ack_of(from)), psh, piece));
            if let Some(s) = self.sent.get_mut(from.idx()) {
                *s += piece.len() as u64;
            }
            out.extend(self.ack(from.other()));
        }
        out
    }

    /// FIN|ACK from `from`, acknowledged by the peer. A second FIN from the same side is
    /// ignored.
    pub fn fin(&mut self, from: Side) -> Vec<Vec<u8>> {
        if self.closed(from) {
            return Vec::new();
        }
        let fin = Flags {
            fin: true,
            ..Flags::default()
        };
        let mut out: Vec<Vec<u8>> = self
            .segment(
                from,
                self.seq_at(from, self.offset(from)),
                Some(self.ack_of(from)),
                fin,
                &[],
            )
            .into_iter()
            .collect();
        if let Some(f) = self.fin_sent.get_mut(from.idx()) {
            *f = true;
        }
        out.extend(self.ack(from.other()));
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use etherparse::{SlicedPacket, TransportSlice};

    fn tcp(frame: &[u8]) -> (u32, u32, bool, bool, bool, usize) {
        let p = SlicedPacket::from_ethernet(frame).unwrap();
        match p.transport.unwrap() {
            TransportSlice::Tcp(t) => (
                t.sequence_number(),
                t.acknowledgment_number(),
                t.syn(),
                t.fin(),
                t.ack(),
                t.payload().len(),
            ),
            _ => panic!("not tcp"),
        }
    }

    #[test]
    fn handshake_data_and_close_keep_sequence_numbers_consistent() {
        let c: SocketAddrV4 = "10.20.0.10:50000".parse().unwrap();
        let s: SocketAddrV4 = "10.20.0.21:502".parse().unwrap();
        let mut f = TcpFlow::new(c, s, 1000, 5000);
        let hs = f.handshake();
        assert_eq!(hs.len(), 3);
        assert_eq!(tcp(&hs[0]).0, 1000);
        assert_eq!(tcp(&hs[1]).1, 1001);
        assert_eq!(tcp(&hs[2]).1, 5001);
        let d = f.data(Side::Client, &[1, 2, 3]);
        assert_eq!(tcp(&d[0]).0, 1001);
        assert_eq!(tcp(&d[0]).5, 3);
        assert_eq!(tcp(&d[1]).1, 1004); // the server acknowledges the three bytes
        let fin = f.fin(Side::Client);
        assert!(tcp(&fin[0]).3);
        assert_eq!(tcp(&fin[1]).1, 1005); // the FIN takes one sequence number
        let fin2 = f.fin(Side::Server);
        assert_eq!(tcp(&fin2[0]).0, 5001);
        assert_eq!(tcp(&fin2[1]).0, 1005);
        assert_eq!(tcp(&fin2[1]).1, 5002);
        assert!(f.fin(Side::Server).is_empty());
    }

    #[test]
    fn large_writes_are_cut_at_the_mss() {
        let c: SocketAddrV4 = "10.20.0.10:50000".parse().unwrap();
        let s: SocketAddrV4 = "10.20.0.21:502".parse().unwrap();
        let mut f = TcpFlow::new(c, s, 1, 2);
        let d = f.data(Side::Server, &[0u8; 3000]);
        assert_eq!(d.len(), 6); // three segments, three ACKs
        assert_eq!(tcp(&d[4]).5, 3000 - 2 * MSS);
    }

    #[test]
    fn udp_frames_carry_the_simulated_addresses() {
        let src: SocketAddrV4 = "10.20.0.41:514".parse().unwrap();
        let dst: SocketAddrV4 = "10.20.0.5:514".parse().unwrap();
        let frame = udp_frame(src, dst, b"<13>hello").unwrap();
        assert_eq!(&frame[6..12], &mac_of(*src.ip()));
        let p = SlicedPacket::from_ethernet(&frame).unwrap();
        assert!(matches!(p.transport, Some(TransportSlice::Udp(_))));
    }
}
