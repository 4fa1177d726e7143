//! From a captured frame to addresses, ports and transport payload. Link layers: Ethernet
//! (802.1Q and QinQ VLANs), Linux cooked v1 and v2, raw IPv4/IPv6, BSD null/loopback. The
//! heavy lifting is `etherparse`'s lax slicer, which still returns what it could read from a
//! frame cut short by the snap length.

use std::net::IpAddr;

use etherparse::{EtherType, LaxNetSlice, LaxSlicedPacket, TransportSlice};

use super::LinkType;

/// Why a frame carries nothing we track.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DecodeError {
    /// A link type we do not decode.
    UnsupportedLink,
    /// Not IP (ARP, LLDP, spanning tree, ...): ignored, not an error on the wire.
    NotIp,
    /// Headers that could not be read (too short, bad version, bad lengths).
    Malformed,
}

/// TCP header flags we act on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpFlags {
    pub syn: bool,
    pub ack: bool,
    pub fin: bool,
    pub rst: bool,
}

/// The transport layer of a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L4<'a> {
    Tcp {
        src_port: u16,
        dst_port: u16,
        seq: u32,
        ack: u32,
        flags: TcpFlags,
        payload: &'a [u8],
        /// Payload bytes the IP header announces but the capture cut off.
        missing: u32,
    },
    Udp {
        src_port: u16,
        dst_port: u16,
        payload: &'a [u8],
    },
    Icmp {
        icmp_type: u8,
        code: u8,
    },
    /// An IPv4 fragment: to be reassembled before the transport can be read.
    Ipv4Fragment {
        id: u16,
        protocol: u8,
        /// Offset in bytes.
        offset: u32,
        more_fragments: bool,
        payload: &'a [u8],
    },
    /// A fragment of an IPv6 datagram (not reassembled; counted).
    Ipv6Fragment,
    /// Another IP protocol (GRE, ESP, OSPF, ...), or a transport header cut short.
    Other {
        protocol: u8,
    },
}

/// A decoded frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decoded<'a> {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub l4: L4<'a>,
}

const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_ICMPV6: u8 = 58;

/// Decodes a frame of the given link type.
pub fn decode_frame(link_type: LinkType, data: &[u8]) -> Result<Decoded<'_>, DecodeError> {
    let sliced = match link_type {
        LinkType::ETHERNET => {
            LaxSlicedPacket::from_ethernet(data).map_err(|_| DecodeError::Malformed)?
        }
        LinkType::LINUX_SLL => {
            // 16-byte header; the protocol (an EtherType for IP) is its last two bytes.
            let proto = be16(data, 14).ok_or(DecodeError::Malformed)?;
            LaxSlicedPacket::from_ether_type(
                EtherType(proto),
                data.get(16..).ok_or(DecodeError::Malformed)?,
            )
        }
        LinkType::LINUX_SLL2 => {
            // 20-byte header starting with the protocol type.
            let proto = be16(data, 0).ok_or(DecodeError::Malformed)?;
            LaxSlicedPacket::from_ether_type(
                EtherType(proto),
                data.get(20..).ok_or(DecodeError::Malformed)?,
            )
        }
        LinkType::RAW
        | LinkType::RAW_12
        | LinkType::RAW_OPENBSD
        | LinkType::IPV4
        | LinkType::IPV6 => LaxSlicedPacket::from_ip(data).map_err(|_| DecodeError::Malformed)?,
        LinkType::NULL | LinkType::LOOP => {
            // A 4-byte address family in the capturing host's byte order (NULL) or network
            // order (LOOP); the IP version nibble that follows says the same more simply.
            LaxSlicedPacket::from_ip(data.get(4..).ok_or(DecodeError::Malformed)?)
                .map_err(|_| DecodeError::Malformed)?
        }
        _ => return Err(DecodeError::UnsupportedLink),
    };
    let (src, dst, payload) = match &sliced.net {
        Some(LaxNetSlice::Ipv4(ip)) => {
            let h = ip.header();
            let payload = ip.payload();
            if payload.fragmented {
                let offset = u32::from(h.fragments_offset().value()) * 8;
                return Ok(Decoded {
                    src: IpAddr::V4(h.source_addr()),
                    dst: IpAddr::V4(h.destination_addr()),
                    l4: L4::Ipv4Fragment {
                        id: h.identification(),
                        protocol: h.protocol().0,
                        offset,
                        more_fragments: h.more_fragments(),
                        payload: payload.payload,
                    },
                });
            }
            let announced = usize::from(h.total_len()).saturating_sub(usize::from(h.ihl()) * 4);
            (
                IpAddr::V4(h.source_addr()),
                IpAddr::V4(h.destination_addr()),
                (payload, announced),
            )
        }
        Some(LaxNetSlice::Ipv6(ip)) => {
            let h = ip.header();
            let payload = ip.payload();
            if payload.fragmented {
                return Ok(Decoded {
                    src: IpAddr::V6(h.source_addr()),
                    dst: IpAddr::V6(h.destination_addr()),
                    l4: L4::Ipv6Fragment,
                });
            }
            let ext_len = ip.extensions().slice().len();
            let announced = usize::from(h.payload_length()).saturating_sub(ext_len);
            (
                IpAddr::V6(h.source_addr()),
                IpAddr::V6(h.destination_addr()),
                (payload, announced),
            )
        }
        Some(LaxNetSlice::Arp(_)) | None => {
            return Err(if sliced.stop_err.is_some() && sliced.link.is_none() {
                DecodeError::Malformed
            } else {
                DecodeError::NotIp
            });
        }
    };
    let (ip_payload, announced) = payload;
    let l4 = match &sliced.transport {
        Some(TransportSlice::Tcp(tcp)) => {
            let header_len = usize::from(tcp.data_offset()) * 4;
            let present = tcp.payload().len();
            let missing = if ip_payload.incomplete {
                announced.saturating_sub(header_len).saturating_sub(present)
            } else {
                0
            };
            tcp_l4(tcp, u32::try_from(missing).unwrap_or(u32::MAX))
        }
        Some(TransportSlice::Udp(udp)) => udp_l4(udp),
        Some(TransportSlice::Icmpv4(icmp)) => L4::Icmp {
            icmp_type: icmp.type_u8(),
            code: icmp.code_u8(),
        },
        Some(TransportSlice::Icmpv6(icmp)) => L4::Icmp {
            icmp_type: icmp.type_u8(),
            code: icmp.code_u8(),
        },
        None => L4::Other {
            protocol: ip_payload.ip_number.0,
        },
    };
    Ok(Decoded { src, dst, l4 })
}

/// Decodes the transport of a reassembled IPv4 datagram.
pub fn decode_transport(protocol: u8, payload: &[u8]) -> L4<'_> {
    match protocol {
        IPPROTO_TCP => match etherparse::TcpSlice::from_slice(payload) {
            Ok(tcp) => tcp_l4(&tcp, 0),
            Err(_) => L4::Other { protocol },
        },
        IPPROTO_UDP => match etherparse::UdpSlice::from_slice(payload) {
            Ok(udp) => udp_l4(&udp),
            Err(_) => L4::Other { protocol },
        },
        IPPROTO_ICMP | IPPROTO_ICMPV6 => match (payload.first(), payload.get(1)) {
            (Some(&icmp_type), Some(&code)) => L4::Icmp { icmp_type, code },
            _ => L4::Other { protocol },
        },
        _ => L4::Other { protocol },
    }
}

fn tcp_l4<'a>(tcp: &etherparse::TcpSlice<'a>, missing: u32) -> L4<'a> {
    L4::Tcp {
        src_port: tcp.source_port(),
        dst_port: tcp.destination_port(),
        seq: tcp.sequence_number(),
        ack: tcp.acknowledgment_number(),
        flags: TcpFlags {
            syn: tcp.syn(),
            ack: tcp.ack(),
            fin: tcp.fin(),
            rst: tcp.rst(),
        },
        payload: tcp.payload(),
        missing,
    }
}

fn udp_l4<'a>(udp: &etherparse::UdpSlice<'a>) -> L4<'a> {
    L4::Udp {
        src_port: udp.source_port(),
        dst_port: udp.destination_port(),
        payload: udp.payload(),
    }
}

fn be16(data: &[u8], at: usize) -> Option<u16> {
    let b = data.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([*b.first()?, *b.get(1)?]))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use etherparse::PacketBuilder;

    fn tcp_frame(vlans: &[u16]) -> Vec<u8> {
        let builder = PacketBuilder::ethernet2([1; 6], [2; 6]);
        let mut out = Vec::new();
        match vlans {
            [] => builder
                .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
                .tcp(40000, 502, 7, 1000)
                .write(&mut out, b"abc")
                .unwrap(),
            [a] => builder
                .single_vlan(etherparse::VlanId::try_new(*a).unwrap())
                .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
                .tcp(40000, 502, 7, 1000)
                .write(&mut out, b"abc")
                .unwrap(),
            [a, b, ..] => builder
                .double_vlan(
                    etherparse::VlanId::try_new(*a).unwrap(),
                    etherparse::VlanId::try_new(*b).unwrap(),
                )
                .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
                .tcp(40000, 502, 7, 1000)
                .write(&mut out, b"abc")
                .unwrap(),
        }
        out
    }

    fn assert_tcp(d: Decoded<'_>) {
        assert_eq!(d.src, IpAddr::from([10, 0, 0, 1]));
        match d.l4 {
            L4::Tcp {
                src_port,
                dst_port,
                seq,
                payload,
                missing,
                ..
            } => {
                assert_eq!(
                    (src_port, dst_port, seq, payload, missing),
                    (40000, 502, 7, &b"abc"[..], 0)
                );
            }
            other => panic!("not TCP: {other:?}"),
        }
    }

    #[test]
    fn ethernet_with_and_without_vlans() {
        for vlans in [&[][..], &[100], &[100, 200]] {
            assert_tcp(decode_frame(LinkType::ETHERNET, &tcp_frame(vlans)).unwrap());
        }
    }

    #[test]
    fn cooked_raw_and_null_links() {
        let eth = tcp_frame(&[]);
        let ip = &eth[14..];
        let mut sll = vec![0u8; 14];
        sll.extend_from_slice(&[0x08, 0x00]);
        sll.extend_from_slice(ip);
        assert_tcp(decode_frame(LinkType::LINUX_SLL, &sll).unwrap());
        let mut sll2 = vec![0x08, 0x00];
        sll2.extend_from_slice(&[0; 18]);
        sll2.extend_from_slice(ip);
        assert_tcp(decode_frame(LinkType::LINUX_SLL2, &sll2).unwrap());
        assert_tcp(decode_frame(LinkType::RAW, ip).unwrap());
        let mut null = vec![2, 0, 0, 0];
        null.extend_from_slice(ip);
        assert_tcp(decode_frame(LinkType::NULL, &null).unwrap());
    }

    #[test]
    fn snaplen_cut_reports_missing_bytes() {
        let eth = tcp_frame(&[]);
        let cut = &eth[..eth.len() - 2];
        match decode_frame(LinkType::ETHERNET, cut).unwrap().l4 {
            L4::Tcp {
                payload, missing, ..
            } => assert_eq!((payload, missing), (&b"a"[..], 2)),
            other => panic!("not TCP: {other:?}"),
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for len in 0..64 {
            let junk: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            for lt in [
                LinkType::ETHERNET,
                LinkType::LINUX_SLL,
                LinkType::LINUX_SLL2,
                LinkType::RAW,
                LinkType::NULL,
            ] {
                let _ = decode_frame(lt, &junk);
            }
        }
    }
}
