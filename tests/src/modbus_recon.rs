//! Reconnaissance captures: a client that probes a Modbus/TCP device for the function codes
//! it implements (every code, answered ILLEGAL FUNCTION where the device has none), or for the
//! unit ids behind it (every unit, answered by a gateway's exception or not at all), as smod,
//! Metasploit's `modbus_findunitid` and nmap's `modbus-discover` do. Built with
//! [`crate::pcapgen`]; the truth is what the generator put on the wire.

use std::net::SocketAddr;

use crate::pcapgen::{Link, Side, TcpConversation};

/// Function codes the probed device implements (it answers them normally).
pub const IMPLEMENTED: [u8; 4] = [1, 3, 5, 6];
/// The unit id the probed device answers to.
pub const DEVICE_UNIT: u8 = 1;

/// An MBAP header (protocol 0, length of unit + PDU) and the PDU.
pub fn adu(tid: u16, unit: u8, pdu: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(7 + pdu.len());
    v.extend_from_slice(&tid.to_be_bytes());
    v.extend_from_slice(&0u16.to_be_bytes());
    v.extend_from_slice(
        &u16::try_from(pdu.len() + 1)
            .unwrap_or(u16::MAX)
            .to_be_bytes(),
    );
    v.push(unit);
    v.extend_from_slice(pdu);
    v
}

/// The probe for function `code`: the code and four data bytes (start 0, quantity 1 for the
/// reads; a scanner sends the same bytes whatever the code).
pub fn probe_pdu(code: u8) -> Vec<u8> {
    vec![code, 0x00, 0x00, 0x00, 0x01]
}

/// What the device answers to `probe_pdu(code)`: a normal response for the codes it
/// implements, else exception 1 (ILLEGAL FUNCTION) with the exception bit set on the code.
pub fn device_answer(code: u8) -> Vec<u8> {
    match code {
        1 => vec![1, 1, 0x01],
        3 => vec![3, 2, 0x00, 0x2A],
        5 | 6 => probe_pdu(code),
        _ => vec![code | 0x80, 0x01],
    }
}

/// How a unit the device is not answers a probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OtherUnits {
    /// A gateway answers exception 0x0B (GATEWAY TARGET DEVICE FAILED TO RESPOND).
    GatewayException,
    /// Nothing comes back.
    Silent,
}

/// One connection from `client` to `server` probing `codes` one at a time on unit
/// [`DEVICE_UNIT`], starting at `start_us`, one probe every `gap_us`. Returns the pcap.
pub fn function_code_scan(
    client: SocketAddr,
    server: SocketAddr,
    start_us: i64,
    codes: impl IntoIterator<Item = u8>,
    gap_us: i64,
) -> Vec<u8> {
    let mut c = TcpConversation::new(Link::Ethernet, client, server, start_us, 100);
    c.handshake();
    for (tid, code) in (1u16..).zip(codes) {
        c.data(Side::Client, &adu(tid, DEVICE_UNIT, &probe_pdu(code)));
        c.data(Side::Server, &adu(tid, DEVICE_UNIT, &device_answer(code)));
        c.ack(Side::Client);
        c.pause(gap_us);
    }
    close(&mut c);
    c.to_pcap()
}

/// One connection probing `units` with a Read Holding Registers of register 0: the device
/// answers on [`DEVICE_UNIT`], the other units as `others` says.
pub fn unit_id_scan(
    client: SocketAddr,
    server: SocketAddr,
    start_us: i64,
    units: impl IntoIterator<Item = u8>,
    others: OtherUnits,
    gap_us: i64,
) -> Vec<u8> {
    let mut c = TcpConversation::new(Link::Ethernet, client, server, start_us, 100);
    c.handshake();
    for (tid, unit) in (1u16..).zip(units) {
        c.data(Side::Client, &adu(tid, unit, &probe_pdu(3)));
        if unit == DEVICE_UNIT {
            c.data(Side::Server, &adu(tid, unit, &device_answer(3)));
        } else if others == OtherUnits::GatewayException {
            c.data(Side::Server, &adu(tid, unit, &[0x83, 0x0B]));
        } else {
            c.ack(Side::Server);
        }
        c.ack(Side::Client);
        c.pause(gap_us);
    }
    close(&mut c);
    c.to_pcap()
}

fn close(c: &mut TcpConversation) {
    c.fin(Side::Client);
    c.fin(Side::Server);
    c.ack(Side::Client);
}

/// How the device of the replica answers a scanned code.
fn part2_answer(code: u8) -> Vec<u8> {
    match code {
        5 | 8 => vec![code, 0, 0, 0, 0],
        7 | 0x28 | 0x2A | 0x7D => vec![code, 0],
        1..=4 | 6 | 0x0B..=0x11 | 0x14..=0x18 | 0x7E => vec![code | 0x80, 0x03],
        _ => vec![code | 0x80, 0x01],
    }
}

/// The coil reads of the replica's second phase (start, quantity) and whether each is
/// answered with data (else ILLEGAL DATA ADDRESS); the last is never answered.
pub const PART2_COIL_READS: [(u16, u16, bool); 13] = [
    (0, 8, true),
    (0, 1, true),
    (65535, 1, false),
    (32767, 1, false),
    (16383, 1, false),
    (8191, 1, false),
    (4095, 1, false),
    (2047, 1, false),
    (1023, 1, true),
    (1535, 1, true),
    (1791, 1, false),
    (1663, 1, false),
    (1599, 1, false),
];

/// A replica of the Digital Bond Modbus test data, part 2 (2004; ITI ICS-Security-Tools,
/// automayt/ICS-pcap `MODBUS-TestDataPart2`), rebuilt from public descriptions of its
/// frames: one connection whose client probes function codes 0 to 127 in order, every
/// request with transaction id 0 and unit 1, then binary-searches the coil table with
/// function 1 (13 reads, the last unanswered). 141 requests, 140 responses, 130 of them
/// exceptions (ILLEGAL FUNCTION, ILLEGAL DATA VALUE, ILLEGAL DATA ADDRESS); tshark counts
/// 281 Modbus/TCP PDUs in the original. The payload bytes of the requests are not known and
/// are filled with zeros.
pub fn digital_bond_part2_replica(
    client: SocketAddr,
    server: SocketAddr,
    start_us: i64,
) -> Vec<u8> {
    let mut c = TcpConversation::new(Link::Ethernet, client, server, start_us, 30_000);
    c.handshake();
    let exchange = |c: &mut TcpConversation, request: &[u8], answer: Option<&[u8]>| {
        c.data(Side::Client, &adu(0, DEVICE_UNIT, request));
        c.pause(450_000);
        if let Some(a) = answer {
            c.data(Side::Server, &adu(0, DEVICE_UNIT, a));
        }
    };
    for code in 0..=0x7Fu8 {
        let mut request = vec![code, 0, 0, 0, 0];
        if matches!(code, 0x0F | 0x10) {
            request.push(0);
        }
        exchange(&mut c, &request, Some(&part2_answer(code)));
    }
    let last = PART2_COIL_READS.len() - 1;
    for (i, &(start, quantity, data)) in PART2_COIL_READS.iter().enumerate() {
        let mut request = vec![1];
        request.extend_from_slice(&start.to_be_bytes());
        request.extend_from_slice(&quantity.to_be_bytes());
        let answer = if data {
            vec![1, 1, 0x05]
        } else {
            vec![0x81, 0x02]
        };
        exchange(&mut c, &request, (i != last).then_some(answer.as_slice()));
    }
    c.to_pcap()
}
