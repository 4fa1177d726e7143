//! Capture input: every pcap flavour (µs and ns, both byte orders), pcapng with several
//! interfaces of different link types and time resolutions, EPB and SPB, truncated files
//! (everything before the cut is delivered, the error names the record), corrupt records
//! (skipped and counted; reading resumes at the next believable record, and how the file is
//! cut into reads does not matter), and IPv4 fragments reassembled into a Modbus request.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use etherparse::{IpHeaders, IpNumber, Ipv4Header, PacketBuilder};
use mamori_agent::capture::{
    CaptureError, Corruption, FileSummary, read_capture, read_capture_file,
    read_capture_file_with_summary,
};
use mamori_agent::pipeline::PipelineConfig;
use mamori_agent::replay::replay_to_vec;
use mamori_models::Event;
use proptest::prelude::*;

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

/// Byte order of a hand-built capture.
#[derive(Clone, Copy, Debug)]
struct Flavour {
    big_endian: bool,
    nanos: bool,
}

const FLAVOURS: [Flavour; 4] = [
    Flavour {
        big_endian: false,
        nanos: false,
    },
    Flavour {
        big_endian: false,
        nanos: true,
    },
    Flavour {
        big_endian: true,
        nanos: false,
    },
    Flavour {
        big_endian: true,
        nanos: true,
    },
];

impl Flavour {
    fn w32(self, v: u32) -> [u8; 4] {
        if self.big_endian {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    }

    /// The 24-byte pcap file header, Ethernet.
    fn file_header(self, snaplen: u32) -> Vec<u8> {
        let magic: u32 = if self.nanos { 0xa1b2_3c4d } else { 0xa1b2_c3d4 };
        let w16 = |v: u16| {
            if self.big_endian {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let mut out = Vec::new();
        out.extend(self.w32(magic));
        out.extend(w16(2)); // version major
        out.extend(w16(4)); // version minor
        out.extend(self.w32(0)); // thiszone
        out.extend(self.w32(0)); // sigfigs
        out.extend(self.w32(snaplen));
        out.extend(self.w32(1)); // LINKTYPE_ETHERNET
        out
    }

    /// One record: a 16-byte header (seconds, sub-second part, captured and original length)
    /// and the frame.
    fn record(self, ts_sec: u32, frac: u32, frame: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend(self.w32(ts_sec));
        out.extend(self.w32(frac));
        out.extend(self.w32(frame.len() as u32)); // captured length
        out.extend(self.w32(frame.len() as u32)); // original length
        out.extend(frame);
        out
    }
}

fn legacy_pcap(big_endian: bool, nanos: bool, frames: &[Vec<u8>], fracs: &[u32]) -> Vec<u8> {
    let flavour = Flavour { big_endian, nanos };
    let mut out = flavour.file_header(65535);
    for (f, frac) in frames.iter().zip(fracs) {
        out.extend(flavour.record(TS_SEC, *frac, f));
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
fn a_packet_for_an_undeclared_interface_is_skipped_and_counted() {
    let frames = modbus_frames();
    let mut f = shb();
    f.extend(idb(1, None));
    f.extend(epb(0, 0, &frames[0]));
    let bad = epb(7, 0, &frames[1]); // interface 7 was never declared
    let bad_at = f.len() as u64;
    f.extend(&bad);
    f.extend(epb(0, 0, &frames[1]));
    let (_d, path) = write_temp(&f);
    let mut seen = 0;
    let summary = read_capture_file(&path, |_| seen += 1).unwrap();
    assert_eq!(seen, 2);
    assert_eq!(summary.corrupt_records, 1);
    // Its framing was intact: skipped whole, no scan.
    assert_eq!(summary.resynchronisations, 0);
    assert_eq!(summary.skipped_bytes, bad.len() as u64);
    assert_eq!(
        summary.first_corruption,
        Some((bad_at, Corruption::UndeclaredInterface))
    );
}

#[test]
fn foreign_and_empty_files_are_clear_errors() {
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

// ---- Corrupt records: skipped, counted, and reading goes on ----

/// Ten or more distinct UDP frames of different lengths (payload byte = frame number).
fn numbered_frames(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let payload = vec![i as u8; 10 + (i * 13) % 60];
            let mut f = Vec::new();
            PacketBuilder::ethernet2([1; 6], [2; 6])
                .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
                .udp(40000, 514)
                .write(&mut f, &payload)
                .unwrap();
            f
        })
        .collect()
}

/// A pcap file of `frames` a few milliseconds apart, and where each record starts and ends.
fn pcap_of(flavour: Flavour, snaplen: u32, frames: &[Vec<u8>]) -> (Vec<u8>, Vec<(usize, usize)>) {
    let mut bytes = flavour.file_header(snaplen);
    let mut records = Vec::new();
    for (i, f) in frames.iter().enumerate() {
        let frac = (i as u32 * 3_000) * if flavour.nanos { 1000 } else { 1 };
        let r = flavour.record(TS_SEC, frac, f);
        records.push((bytes.len(), r.len()));
        bytes.extend(r);
    }
    (bytes, records)
}

/// A pcapng file (one Ethernet interface) of `frames`, and where each EPB starts and ends.
fn pcapng_of(frames: &[Vec<u8>]) -> (Vec<u8>, Vec<(usize, usize)>) {
    let mut bytes = shb();
    bytes.extend(idb(1, None));
    let mut blocks = Vec::new();
    for (i, f) in frames.iter().enumerate() {
        let b = epb(0, u64::from(TS_SEC) * 1_000_000 + i as u64 * 3_000, f);
        blocks.push((bytes.len(), b.len()));
        bytes.extend(b);
    }
    (bytes, blocks)
}

#[derive(Debug, PartialEq)]
struct ReadBack {
    packets: Vec<Vec<u8>>,
    summary: FileSummary,
    error: Option<String>,
}

fn read_file(bytes: &[u8]) -> ReadBack {
    let (_d, path) = write_temp(bytes);
    let mut packets = Vec::new();
    let (summary, result) =
        read_capture_file_with_summary(&path, |p| packets.push(p.data.to_vec()));
    ReadBack {
        packets,
        summary,
        error: result
            .err()
            .map(|e| e.to_string().replace(&*path.to_string_lossy(), "FILE")),
    }
}

/// Hands the bytes out `chunk` at a time after a first read that fills the buffer (the file
/// header must arrive whole), like a slow disk or a pipe.
struct ShortReads {
    bytes: Vec<u8>,
    at: usize,
    chunk: usize,
}

impl Read for ShortReads {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let limit = if self.at == 0 { buf.len() } else { self.chunk };
        let n = limit.min(buf.len()).min(self.bytes.len() - self.at);
        buf[..n].copy_from_slice(&self.bytes[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Reads `bytes` with a `capacity`-byte initial buffer and reads of `chunk` bytes, on another
/// thread: a reader that loops fails the test after a minute instead of hanging it.
fn read_in_pieces(bytes: Vec<u8>, capacity: usize, chunk: usize) -> ReadBack {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let input = ShortReads {
            bytes,
            at: 0,
            chunk: chunk.max(1),
        };
        let mut packets = Vec::new();
        let (summary, result) = read_capture(input, Path::new("FILE"), capacity, |p| {
            packets.push(p.data.to_vec())
        });
        let _ = tx.send(ReadBack {
            packets,
            summary,
            error: result.err().map(|e| e.to_string()),
        });
    });
    rx.recv_timeout(Duration::from_secs(60))
        .expect("the reader panicked or did not finish within a minute")
}

fn without(frames: &[Vec<u8>], lost: &[usize]) -> Vec<Vec<u8>> {
    frames
        .iter()
        .enumerate()
        .filter(|(i, _)| !lost.contains(i))
        .map(|(_, f)| f.clone())
        .collect()
}

#[test]
fn pcap_with_a_corrupt_record_header_in_the_middle_is_read_past_it() {
    let frames = numbered_frames(10);
    for flavour in FLAVOURS {
        let (mut bytes, records) = pcap_of(flavour, 65535, &frames);
        let (at, len) = records[4];
        bytes[at + 8..at + 12].copy_from_slice(&flavour.w32(0xFFFF_FFF0)); // captured length
        let got = read_file(&bytes);
        assert_eq!(got.error, None, "{flavour:?}");
        assert_eq!(got.packets, without(&frames, &[4]), "{flavour:?}");
        assert_eq!(got.summary.packets, 9);
        assert_eq!(got.summary.corrupt_records, 1);
        assert_eq!(got.summary.resynchronisations, 1);
        assert_eq!(got.summary.skipped_bytes, len as u64);
        assert_eq!(
            got.summary.first_corruption,
            Some((at as u64, Corruption::CaptureLengthTooLarge))
        );
    }
}

#[test]
fn pcap_with_garbage_inserted_between_records_is_read_past_it() {
    let frames = numbered_frames(10);
    let garbage = b"garbage: a text that is not a record header ".repeat(3);
    for flavour in FLAVOURS {
        let (mut bytes, records) = pcap_of(flavour, 65535, &frames);
        let at = records[6].0;
        bytes.splice(at..at, garbage.iter().copied());
        let got = read_file(&bytes);
        assert_eq!(got.error, None, "{flavour:?}");
        assert_eq!(got.packets, frames, "{flavour:?}");
        assert_eq!(got.summary.corrupt_records, 1);
        assert_eq!(got.summary.resynchronisations, 1);
        assert_eq!(got.summary.skipped_bytes, garbage.len() as u64);
        assert_eq!(got.summary.first_corruption.unwrap().0, at as u64);
    }
}

#[test]
fn pcapng_with_a_block_of_bad_length_is_read_past_it() {
    let frames = numbered_frames(10);
    // The leading block total length of the fifth EPB, from its true length.
    type BadLength = fn(u32) -> u32;
    let cases: [(BadLength, Corruption); 3] = [
        (|len| len + 2, Corruption::BlockLengthNotMultipleOf4),
        (|len| len + 4, Corruption::TrailingLengthDiffers),
        (|_| 0xFFFF_FFF0, Corruption::BlockTooLong),
    ];
    for (bad_length, reason) in cases {
        let (mut bytes, blocks) = pcapng_of(&frames);
        let (at, len) = blocks[4];
        bytes[at + 4..at + 8].copy_from_slice(&bad_length(len as u32).to_le_bytes());
        let got = read_file(&bytes);
        assert_eq!(got.error, None, "{reason}");
        assert_eq!(got.packets, without(&frames, &[4]), "{reason}");
        assert_eq!(got.summary.corrupt_records, 1);
        assert_eq!(got.summary.resynchronisations, 1);
        assert_eq!(got.summary.skipped_bytes, len as u64);
        assert_eq!(got.summary.first_corruption, Some((at as u64, reason)));
    }
}

#[test]
fn big_endian_pcapng_with_a_block_of_bad_length_is_read_past_it() {
    let be = |v: u32| v.to_be_bytes();
    let block = |kind: u32, body: &[u8]| {
        let len = (12 + body.len()) as u32;
        [&be(kind)[..], &be(len), body, &be(len)].concat()
    };
    // Section header: byte-order magic, version 1.0, section length unknown.
    let mut bytes = block(
        0x0A0D_0D0A,
        &[&be(0x1A2B_3C4D)[..], &[0, 1, 0, 0], &[0xFF; 8]].concat(),
    );
    // Interface description: Ethernet, reserved, snaplen.
    bytes.extend(block(1, &[&[0, 1, 0, 0][..], &be(65535)].concat()));
    let frames: Vec<Vec<u8>> = numbered_frames(6)
        .into_iter()
        .map(|mut f| {
            f.resize(f.len().next_multiple_of(4), 0); // no padding needed in the EPB
            f
        })
        .collect();
    let mut blocks = Vec::new();
    for (i, f) in frames.iter().enumerate() {
        // Enhanced packet: interface 0, timestamp high and low, captured and original length.
        let ts = u64::from(TS_SEC) * 1_000_000 + i as u64;
        let body = [
            &be(0)[..],
            &be((ts >> 32) as u32),
            &be(ts as u32),
            &be(f.len() as u32),
            &be(f.len() as u32),
            f,
        ]
        .concat();
        blocks.push((bytes.len(), 12 + body.len()));
        bytes.extend(block(6, &body));
    }
    let (at, len) = blocks[2];
    bytes[at + 4..at + 8].copy_from_slice(&be(len as u32 + 4)); // leading total length
    let got = read_file(&bytes);
    assert_eq!(got.error, None);
    assert_eq!(got.packets, without(&frames, &[2]));
    assert_eq!(got.summary.skipped_bytes, len as u64);
    assert_eq!(
        got.summary.first_corruption,
        Some((at as u64, Corruption::TrailingLengthDiffers))
    );
}

#[test]
fn garbage_at_the_very_end_is_skipped_and_counted() {
    let frames = numbered_frames(3);
    let garbage = b"trailing garbage, written after the capture ended... ".repeat(2);
    let (mut bytes, _) = pcap_of(FLAVOURS[0], 65535, &frames);
    let end = bytes.len() as u64;
    bytes.extend(&garbage);
    let got = read_file(&bytes);
    assert_eq!(got.error, None);
    assert_eq!(got.packets, frames);
    assert_eq!(got.summary.corrupt_records, 1);
    assert_eq!(got.summary.skipped_bytes, garbage.len() as u64);
    assert_eq!(got.summary.first_corruption.unwrap().0, end);

    let (mut bytes, _) = pcapng_of(&frames);
    bytes.extend(&garbage);
    let got = read_file(&bytes);
    assert_eq!(got.error, None);
    assert_eq!(got.packets, frames);
    assert_eq!(got.summary.skipped_bytes, garbage.len() as u64);

    // Fewer bytes than a record header cannot be told from a header cut short: truncated,
    // as before.
    let (mut bytes, _) = pcap_of(FLAVOURS[0], 65535, &frames);
    bytes.extend(&garbage[..10]);
    let got = read_file(&bytes);
    assert_eq!(got.packets, frames);
    assert_eq!(
        got.error.as_deref(),
        Some("FILE: record 4: truncated (the file ends inside it)")
    );
}

#[test]
fn garbage_after_the_file_header_is_an_error_only_when_nothing_is_readable() {
    let garbage = b"nothing but garbage after a valid file header; ".repeat(10);
    let mut bytes = FLAVOURS[0].file_header(65535);
    bytes.extend(&garbage);
    let got = read_file(&bytes);
    assert!(got.packets.is_empty());
    assert_eq!(got.summary.skipped_bytes, garbage.len() as u64);
    assert_eq!(
        got.error.as_deref(),
        Some(&*format!(
            "FILE: no packet could be read: {} bytes are corrupt, the first at offset 24 \
             (captured length over 16 MiB)",
            garbage.len()
        ))
    );

    let frames = numbered_frames(5);
    let (good, _) = pcap_of(FLAVOURS[0], 65535, &frames);
    let mut bytes = good[..24].to_vec();
    bytes.extend(&garbage);
    bytes.extend(&good[24..]);
    let got = read_file(&bytes);
    assert_eq!(got.error, None);
    assert_eq!(got.packets, frames);
    assert_eq!(got.summary.skipped_bytes, garbage.len() as u64);
}

#[test]
fn a_zeroed_stretch_loses_only_the_records_whose_headers_it_wiped() {
    let frames = numbered_frames(20);
    let (mut bytes, records) = pcap_of(FLAVOURS[0], 65535, &frames);
    // From the middle of record 5's data to the middle of record 9's.
    let from = records[5].0 + 16 + 10;
    let to = records[9].0 + 20;
    bytes[from..to].fill(0);
    let got = read_file(&bytes);
    assert_eq!(got.error, None);
    // Record 5 keeps its header: read, with the zeros in its data.
    let mut expected = without(&frames, &[6, 7, 8, 9]);
    expected[5][10..].fill(0);
    assert_eq!(got.packets, expected);
    assert_eq!(got.summary.corrupt_records, 1);
    assert_eq!(
        got.summary.skipped_bytes,
        (records[10].0 - records[6].0) as u64
    );
    assert_eq!(
        got.summary.first_corruption,
        Some((records[6].0 as u64, Corruption::EmptyRecord))
    );
}

#[test]
fn a_record_with_a_wrong_length_costs_at_most_itself() {
    let frames = numbered_frames(10);
    let flavour = FLAVOURS[2];
    // Both lengths grew by 200 (a consistent header): the next header is not where it says,
    // and record 4 starts inside it, so the length is wrong and the record is dropped.
    let (mut bytes, records) = pcap_of(flavour, 65535, &frames);
    let (at, len) = records[3];
    let wrong = (len - 16 + 200) as u32;
    bytes[at + 8..at + 12].copy_from_slice(&flavour.w32(wrong)); // captured length
    bytes[at + 12..at + 16].copy_from_slice(&flavour.w32(wrong)); // original length
    let got = read_file(&bytes);
    assert_eq!(got.error, None);
    assert_eq!(got.packets, without(&frames, &[3]));
    assert_eq!(got.summary.skipped_bytes, len as u64);
    assert_eq!(
        got.summary.first_corruption,
        Some((at as u64, Corruption::LengthDisagreesWithNextRecord))
    );

    // Both lengths shrank by 10: record 3 is read short, its last 10 bytes are skipped.
    let (mut bytes, _) = pcap_of(flavour, 65535, &frames);
    let wrong = (len - 16 - 10) as u32;
    bytes[at + 8..at + 12].copy_from_slice(&flavour.w32(wrong));
    bytes[at + 12..at + 16].copy_from_slice(&flavour.w32(wrong));
    let got = read_file(&bytes);
    assert_eq!(got.error, None);
    let mut expected = frames.clone();
    expected[3].truncate(wrong as usize);
    assert_eq!(got.packets, expected);
    assert_eq!(got.summary.skipped_bytes, 10);
}

#[test]
fn records_up_to_16_mib_are_read_and_longer_claims_are_corrupt() {
    // Snapshot length 0 (unknown): only the 16 MiB bound applies. The read buffer grows from
    // 256 KiB to hold the 10 MiB record.
    let flavour = FLAVOURS[0];
    let big = vec![0x42; 10 << 20];
    let small = numbered_frames(1).remove(0);
    let mut bytes = flavour.file_header(0);
    bytes.extend(flavour.record(TS_SEC, 1, &big));
    let claim_at = bytes.len();
    bytes.extend(flavour.record(TS_SEC, 2, &small));
    bytes.extend(flavour.record(TS_SEC, 3, &small));
    let got = read_file(&bytes);
    assert_eq!(got.error, None);
    assert_eq!(got.packets.len(), 3);
    assert_eq!(got.packets[0].len(), 10 << 20);

    // The second record claims 20 MiB: corrupt, and the third is still read.
    bytes[claim_at + 8..claim_at + 12].copy_from_slice(&flavour.w32(20 << 20));
    let got = read_file(&bytes);
    assert_eq!(got.error, None);
    assert_eq!(got.packets.len(), 2);
    assert_eq!(
        got.summary.first_corruption,
        Some((claim_at as u64, Corruption::CaptureLengthTooLarge))
    );
}

#[test]
fn records_a_capture_program_would_not_write_are_read_when_the_next_one_confirms_them() {
    // Writers that ignore the snapshot length exist (Wireshark reads their files): every
    // record here exceeds it; one has a sub-second part over a second.
    let frames = numbered_frames(6);
    let (mut bytes, records) = pcap_of(FLAVOURS[0], 40, &frames);
    let at = records[2].0;
    bytes[at + 4..at + 8].copy_from_slice(&2_000_000u32.to_le_bytes());
    let got = read_file(&bytes);
    assert_eq!(got.error, None);
    assert_eq!(got.packets, frames);
    assert_eq!(got.summary.corrupt_records, 0);

    // After a corrupt record in such a file, records as large as those read so far are
    // candidates for the resynchronisation.
    let frames = numbered_frames(10);
    let (mut bytes, records) = pcap_of(FLAVOURS[0], 40, &frames);
    let at = records[4].0;
    bytes[at + 8..at + 12].copy_from_slice(&0xFFFF_FFF0u32.to_le_bytes()); // captured length
    let got = read_file(&bytes);
    assert_eq!(got.error, None);
    assert_eq!(got.packets, without(&frames, &[4]));
}

#[test]
fn replay_of_a_capture_with_garbage_succeeds_and_stats_count_what_was_skipped() {
    let frames = numbered_frames(10);
    let garbage = b"garbage: a text that is not a record header ".repeat(3);
    let (mut bytes, records) = pcap_of(FLAVOURS[0], 65535, &frames);
    let at = records[6].0;
    bytes.splice(at..at, garbage.iter().copied());
    let (_d, path) = write_temp(&bytes);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mamori-agent"))
        .args(["replay", "--stats"])
        .arg(&path)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // One warning for the file, saying where.
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("corrupt records skipped"))
        .collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
    assert!(warnings[0].contains(&at.to_string()), "{stderr}");
    let stats: serde_json::Value = stderr
        .lines()
        .find(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .unwrap();
    assert_eq!(stats["packets"], 10);
    assert_eq!(stats["file_corrupt_records"], 1);
    assert_eq!(stats["file_resynchronisations"], 1);
    assert_eq!(stats["file_skipped_bytes"], garbage.len());

    // Nothing readable at all: exit status 1, and the error says why.
    let mut bytes = FLAVOURS[0].file_header(65535);
    bytes.extend(&garbage);
    let (_d, path) = write_temp(&bytes);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mamori-agent"))
        .arg("replay")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no packet could be read"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Records of random bytes (the reader does not look inside them), `1..=16` of them.
fn random_frames() -> impl Strategy<Value = Vec<Vec<u8>>> {
    proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..120), 1..=16)
}

/// Stretches of bytes that look like parts of a capture: zeros, copies of record headers whose
/// lengths promise more than follows, random bytes.
fn record_like_garbage(flavour: Flavour) -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        (1usize..64).prop_map(|n| vec![0; n]),
        proptest::collection::vec(any::<u8>(), 1..64),
        (0u32..100_000, 2u32..400, 0usize..50).prop_map(move |(frac, caplen, present)| {
            let mut r = Vec::new();
            r.extend(flavour.w32(TS_SEC));
            r.extend(flavour.w32(frac));
            r.extend(flavour.w32(caplen)); // captured length
            r.extend(flavour.w32(caplen)); // original length
            r.extend(vec![0x5A; present.min(caplen as usize - 1)]);
            r
        }),
    ];
    proptest::collection::vec(piece, 1..6).prop_map(|pieces| pieces.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Uniformly random garbage between two records (or after the header, or at the end) is
    /// skipped exactly and every record is read, however the file is cut into reads.
    ///
    /// Guaranteed for any input: no panic; the reader stops (each step consumes bytes, reads
    /// or grows the buffer up to a bound); what it delivers and skips adds up to the file.
    /// Not guaranteed for arbitrary garbage: garbage may itself contain two consecutive
    /// believable records. For uniformly random bytes that takes a consistent header (for µs
    /// timestamps about 4e-9 per position: captured length within the snaplen, sub-second part
    /// in range; for ns about 4e-6), within 30 days of the last record read and confirmed by a
    /// second such header or the end of the file: below 1e-9 per case, so this asserts that
    /// every record is read.
    #[test]
    fn random_garbage_between_records_is_skipped_and_every_record_is_read(
        flavour in proptest::sample::select(FLAVOURS.to_vec()),
        frames in random_frames(),
        position in any::<proptest::sample::Index>(),
        garbage in proptest::collection::vec(any::<u8>(), 16..600),
        capacity in 64usize..4096,
        chunk in 1usize..300,
    ) {
        let (mut bytes, records) = pcap_of(flavour, 65535, &frames);
        let k = position.index(frames.len() + 1);
        let at = records.get(k).map_or(bytes.len(), |r| r.0);
        bytes.splice(at..at, garbage.iter().copied());
        let got = read_in_pieces(bytes.clone(), capacity, chunk);
        prop_assert_eq!(got.error.as_deref(), None);
        prop_assert_eq!(&got.packets, &frames);
        prop_assert_eq!(got.summary.skipped_bytes, garbage.len() as u64);
        prop_assert_eq!(got.summary.first_corruption.map(|c| c.0), Some(at as u64));
        // However the file is cut into reads, the same result.
        prop_assert_eq!(got, read_in_pieces(bytes, 1 << 18, 1 << 18));
    }

    /// The same for pcapng: random garbage between blocks.
    #[test]
    fn random_garbage_between_pcapng_blocks_is_skipped_and_every_packet_is_read(
        frames in random_frames(),
        position in any::<proptest::sample::Index>(),
        garbage in proptest::collection::vec(any::<u8>(), 1..600),
        capacity in 64usize..4096,
        chunk in 1usize..300,
    ) {
        let (mut bytes, blocks) = pcapng_of(&frames);
        let k = position.index(frames.len() + 1);
        let at = blocks.get(k).map_or(bytes.len(), |b| b.0);
        bytes.splice(at..at, garbage.iter().copied());
        let got = read_in_pieces(bytes.clone(), capacity, chunk);
        // Fewer than 8 bytes at the very end cannot be told from a cut block header.
        if k < frames.len() || garbage.len() >= 8 {
            prop_assert_eq!(got.error.as_deref(), None);
            prop_assert_eq!(got.summary.skipped_bytes, garbage.len() as u64);
        }
        prop_assert_eq!(&got.packets, &frames);
        prop_assert_eq!(got, read_in_pieces(bytes, 1 << 18, 1 << 18));
    }

    /// Garbage made of capture-like pieces (zero runs, record headers promising more than
    /// follows, random bytes): never a panic or a hang, every record before it is read, the
    /// bytes add up, and the cut into reads does not matter. Records after it are counted, not
    /// asserted: see `record_like_garbage_recovery_rate`.
    #[test]
    fn record_like_garbage_never_panics_never_hangs_and_keeps_what_came_before(
        (flavour, garbage) in proptest::sample::select(FLAVOURS.to_vec())
            .prop_flat_map(|f| (Just(f), record_like_garbage(f))),
        frames in random_frames(),
        position in any::<proptest::sample::Index>(),
        capacity in 64usize..4096,
        chunk in 1usize..300,
    ) {
        let (mut bytes, records) = pcap_of(flavour, 65535, &frames);
        let k = position.index(frames.len() + 1);
        let at = records.get(k).map_or(bytes.len(), |r| r.0);
        bytes.splice(at..at, garbage.iter().copied());
        let got = read_in_pieces(bytes.clone(), capacity, chunk);
        prop_assert_eq!(&got.packets[..k.min(got.packets.len())], &frames[..k]);
        let delivered: usize = got.packets.iter().map(|p| 16 + p.len()).sum();
        let accounted = 24 + delivered as u64 + got.summary.skipped_bytes;
        if got.error.is_none() {
            prop_assert_eq!(accounted, bytes.len() as u64);
        } else {
            prop_assert!(accounted <= bytes.len() as u64);
        }
        prop_assert_eq!(got, read_in_pieces(bytes, 1 << 18, 1 << 18));
    }
}

/// How often every record after record-like garbage is still read: measured over 2000 cases
/// drawn from a fixed seed, so the figure is reproducible (`MAMORI_SHOW_LOSSES=1` prints the
/// cases that lose records). Records the garbage itself seems to hold are read too; they are
/// not counted as losses.
#[test]
fn record_like_garbage_recovery_rate() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let cases = 2000;
    let mut recovered = 0;
    let mut lost_records = 0;
    let mut total_after = 0;
    for case in 0..cases {
        let flavour = FLAVOURS[case % 4];
        let garbage = record_like_garbage(flavour)
            .new_tree(&mut runner)
            .unwrap()
            .current();
        let frames = random_frames().new_tree(&mut runner).unwrap().current();
        let k = (case * 7) % (frames.len() + 1);
        let (mut bytes, records) = pcap_of(flavour, 65535, &frames);
        let at = records.get(k).map_or(bytes.len(), |r| r.0);
        bytes.splice(at..at, garbage.iter().copied());
        let got = read_in_pieces(bytes, 1 << 18, 1 << 18);
        assert_eq!(&got.packets[..k], &frames[..k]);
        let after = &frames[k..];
        let tail = &got.packets[got.packets.len().saturating_sub(after.len())..];
        let kept = after
            .iter()
            .rev()
            .zip(tail.iter().rev())
            .take_while(|(a, b)| a == b)
            .count();
        total_after += after.len();
        lost_records += after.len() - kept;
        if kept == after.len() {
            recovered += 1;
        } else if std::env::var_os("MAMORI_SHOW_LOSSES").is_some() {
            eprintln!("case {case} {flavour:?} k={k} garbage={garbage:02x?}");
            eprintln!(
                "  lengths {:?}",
                frames.iter().map(Vec::len).collect::<Vec<_>>()
            );
            eprintln!(
                "  read    {:?}",
                got.packets.iter().map(Vec::len).collect::<Vec<_>>()
            );
            eprintln!("  {:?} {:?}", got.summary, got.error);
        }
    }
    eprintln!(
        "record-like garbage: every record after it read in {recovered} of {cases} files; \
         {lost_records} of {total_after} records after the garbage lost"
    );
    // 1989 of 2000 when written (20 of 9261 records lost): garbage records whose claimed
    // length happens to end on a real record boundary swallow the records they cover.
    assert!(recovered * 100 >= cases * 98, "{recovered}/{cases}");
}
