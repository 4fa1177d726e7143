//! Capture input: every pcap flavour (µs and ns, both byte orders), pcapng with several
//! interfaces of different link types and time resolutions, EPB and SPB, truncated and corrupt
//! files (everything before the fault is delivered, the error names the record), and IPv4
//! fragments reassembled into a Modbus request.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::io::Write;
use std::path::PathBuf;

use etherparse::{IpHeaders, IpNumber, Ipv4Header, PacketBuilder};
use mamori_agent::capture::{CaptureError, read_capture_file};
use mamori_agent::pipeline::PipelineConfig;
use mamori_agent::replay::replay_to_vec;
use mamori_models::Event;

const TS_SEC: u32 = 1_352_718_225;

/// A Modbus Read Holding Registers request and its response, as two Ethernet frames.
fn modbus_frames() -> Vec<Vec<u8>> {
    let req = [0x00, 0x07, 0, 0, 0, 6, 1, 3, 0x00, 0x10, 0x00, 0x02];
    let resp = [0x00, 0x07, 0, 0, 0, 7, 1, 3, 4, 0x12, 0x34, 0x56, 0x78];
    let mut a = Vec::new();
    PacketBuilder::ethernet2([1; 6], [2; 6])
        .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .tcp(40000, 502, 100, 1000)
        .ack(500)
        .write(&mut a, &req)
        .unwrap();
    let mut b = Vec::new();
    PacketBuilder::ethernet2([2; 6], [1; 6])
        .ipv4([10, 0, 0, 2], [10, 0, 0, 1], 64)
        .tcp(502, 40000, 500, 1000)
        .ack(112)
        .write(&mut b, &resp)
        .unwrap();
    vec![a, b]
}

fn legacy_pcap(big_endian: bool, nanos: bool, frames: &[Vec<u8>], fracs: &[u32]) -> Vec<u8> {
    let magic: u32 = if nanos { 0xa1b2_3c4d } else { 0xa1b2_c3d4 };
    let w32 = |v: u32| {
        if big_endian {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    };
    let w16 = |v: u16| {
        if big_endian {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    };
    let mut out = Vec::new();
    out.extend(w32(magic));
    out.extend(w16(2));
    out.extend(w16(4));
    out.extend(w32(0));
    out.extend(w32(0));
    out.extend(w32(65535));
    out.extend(w32(1));
    for (f, frac) in frames.iter().zip(fracs) {
        out.extend(w32(TS_SEC));
        out.extend(w32(*frac));
        out.extend(w32(f.len() as u32));
        out.extend(w32(f.len() as u32));
        out.extend(f);
    }
    out
}

fn write_temp(bytes: &[u8]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("capture");
    std::fs::File::create(&path)
        .unwrap()
        .write_all(bytes)
        .unwrap();
    (dir, path)
}

fn modbus_events(path: &PathBuf) -> Vec<mamori_models::ModbusEvent> {
    let (events, report) = replay_to_vec(std::slice::from_ref(path), PipelineConfig::default());
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    events
        .into_iter()
        .filter_map(|e| match e {
            Event::Modbus(m) => Some(m),
            _ => None,
        })
        .collect()
}

#[test]
fn pcap_in_both_byte_orders_and_both_resolutions() {
    for big_endian in [false, true] {
        for nanos in [false, true] {
            let fracs = if nanos {
                [615_066_123, 615_566_999]
            } else {
                [615_066, 615_566]
            };
            let (_d, path) = write_temp(&legacy_pcap(big_endian, nanos, &modbus_frames(), &fracs));
            let events = modbus_events(&path);
            assert_eq!(events.len(), 1, "big_endian={big_endian} nanos={nanos}");
            let e = &events[0];
            assert_eq!(e.ts.to_string(), "2012-11-12T11:03:45.615066Z");
            assert_eq!(e.latency_us, Some(500));
            assert_eq!(
                e.response.as_ref().unwrap().values,
                Some(mamori_models::Values::Registers(vec![0x1234, 0x5678]))
            );
        }
    }
}

fn block(kind: u32, body: &[u8]) -> Vec<u8> {
    let pad = (4 - body.len() % 4) % 4;
    let len = (12 + body.len() + pad) as u32;
    let mut b = Vec::new();
    b.extend(kind.to_le_bytes());
    b.extend(len.to_le_bytes());
    b.extend(body);
    b.extend(vec![0; pad]);
    b.extend(len.to_le_bytes());
    b
}

fn idb(link_type: u16, tsresol: Option<u8>) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend(link_type.to_le_bytes());
    body.extend([0, 0]);
    body.extend(65535u32.to_le_bytes());
    if let Some(r) = tsresol {
        body.extend(9u16.to_le_bytes()); // if_tsresol
        body.extend(1u16.to_le_bytes());
        body.extend([r, 0, 0, 0]);
        body.extend([0, 0, 0, 0]); // opt_endofopt
    }
    block(1, &body)
}

fn epb(if_id: u32, ts: u64, data: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend(if_id.to_le_bytes());
    body.extend(((ts >> 32) as u32).to_le_bytes());
    body.extend((ts as u32).to_le_bytes());
    body.extend((data.len() as u32).to_le_bytes());
    body.extend((data.len() as u32).to_le_bytes());
    body.extend(data);
    let pad = (4 - data.len() % 4) % 4;
    body.extend(vec![0; pad]);
    block(6, &body)
}

fn shb() -> Vec<u8> {
    let mut body = Vec::new();
    body.extend(0x1A2B_3C4Du32.to_le_bytes());
    body.extend(1u16.to_le_bytes());
    body.extend(0u16.to_le_bytes());
    body.extend((-1i64).to_le_bytes());
    block(0x0A0D_0D0A, &body)
}

#[test]
fn pcapng_with_two_interfaces_of_different_links_and_resolutions() {
    let frames = modbus_frames();
    // Interface 0: Ethernet, microseconds (default). Interface 1: raw IP, nanoseconds.
    let mut f = shb();
    f.extend(idb(1, None));
    f.extend(idb(101, Some(9)));
    let us = u64::from(TS_SEC) * 1_000_000 + 615_066;
    f.extend(epb(0, us, &frames[0]));
    let ns = (u64::from(TS_SEC) * 1_000_000 + 615_566) * 1000 + 999;
    f.extend(epb(1, ns, &frames[1][14..]));
    let (_d, path) = write_temp(&f);
    let events = modbus_events(&path);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].latency_us, Some(500));
    assert!(events[0].anomalies.is_empty(), "{:?}", events[0].anomalies);
}

#[test]
fn simple_packet_blocks_are_read() {
    let frames = modbus_frames();
    let mut f = shb();
    f.extend(idb(1, None));
    for fr in &frames {
        let mut body = Vec::new();
        body.extend((fr.len() as u32).to_le_bytes());
        body.extend(fr);
        f.extend(block(3, &body));
    }
    let (_d, path) = write_temp(&f);
    let mut n = 0;
    read_capture_file(&path, |p| {
        assert_eq!(p.data.len(), frames[n].len());
        n += 1;
    })
    .unwrap();
    assert_eq!(n, 2);
}

#[test]
fn truncated_file_delivers_what_came_before_and_names_the_record() {
    let mut frames = modbus_frames();
    frames.push(frames[0].clone());
    let bytes = legacy_pcap(false, false, &frames, &[1, 2, 3]);
    let cut = &bytes[..bytes.len() - 10];
    let (_d, path) = write_temp(cut);
    let mut seen = 0;
    let err = read_capture_file(&path, |_| seen += 1).unwrap_err();
    assert_eq!(seen, 2);
    assert!(
        matches!(err, CaptureError::Truncated { record: 3, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("record 3"), "{err}");
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
}

#[test]
fn corrupt_and_foreign_files_are_clear_errors() {
    let frames = modbus_frames();
    let mut f = shb();
    f.extend(idb(1, None));
    f.extend(epb(0, 0, &frames[0]));
    f.extend(epb(7, 0, &frames[1])); // interface 7 was never declared
    let (_d, path) = write_temp(&f);
    let mut seen = 0;
    let err = read_capture_file(&path, |_| seen += 1).unwrap_err();
    assert_eq!(seen, 1);
    assert!(
        matches!(err, CaptureError::Corrupt { record: 2, .. }),
        "{err}"
    );

    let (_d, path) = write_temp(b"this is not a capture file at all, just text\n");
    let err = read_capture_file(&path, |_| {}).unwrap_err();
    assert!(matches!(err, CaptureError::NotACapture { .. }), "{err}");
    let (_d, path) = write_temp(b"");
    assert!(matches!(
        read_capture_file(&path, |_| {}).unwrap_err(),
        CaptureError::Empty { .. }
    ));
}

#[test]
fn ipv4_fragments_are_reassembled_before_tcp() {
    // The request's TCP segment is sent as two IPv4 fragments (first 16 bytes, then the rest).
    let req = [0x00, 0x07, 0, 0, 0, 6, 1, 3, 0x00, 0x10, 0x00, 0x02];
    let mut whole = Vec::new();
    PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .tcp(40000, 502, 100, 1000)
        .ack(500)
        .write(&mut whole, &req)
        .unwrap();
    let ip_payload = &whole[20..]; // TCP header + data: 32 bytes
    let frag = |offset: usize, more: bool, data: &[u8]| {
        let mut h = Ipv4Header::new(
            data.len() as u16,
            64,
            IpNumber::TCP,
            [10, 0, 0, 1],
            [10, 0, 0, 2],
        )
        .unwrap();
        h.identification = 77;
        h.more_fragments = more;
        h.fragment_offset = etherparse::IpFragOffset::try_new((offset / 8) as u16).unwrap();
        let mut out = Vec::new();
        etherparse::Ethernet2Header {
            source: [1; 6],
            destination: [2; 6],
            ether_type: etherparse::EtherType::IPV4,
        }
        .write(&mut out)
        .unwrap();
        IpHeaders::Ipv4(h, Default::default())
            .write(&mut out)
            .unwrap();
        out.extend_from_slice(data);
        out
    };
    // Out of order: the tail fragment first.
    let f2 = frag(16, false, &ip_payload[16..]);
    let f1 = frag(0, true, &ip_payload[..16]);
    let mut frames = vec![f2, f1];
    frames.push(modbus_frames()[1].clone());
    let (_d, path) = write_temp(&legacy_pcap(false, false, &frames, &[1, 2, 3]));
    let events = modbus_events(&path);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].request.as_ref().unwrap().address, Some(0x10));
    assert!(events[0].response.is_some());
}
