//! The capture file reader (pcap and pcapng, resynchronisation after corrupt records) on
//! arbitrary bytes. The first byte picks the read length and the second the initial buffer
//! size; the rest is the file. Besides not panicking or hanging, the reader must give the same
//! packets, summary and error whether the file arrives in short reads into a small buffer or
//! in one read.
#![no_main]

use std::io::Read;
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use mamori_agent::capture::{FileSummary, read_capture};

/// Hands out `chunk` bytes per read after a first read that fills the buffer.
struct ShortReads<'a> {
    bytes: &'a [u8],
    first: bool,
    chunk: usize,
}

impl Read for ShortReads<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let limit = if self.first { buf.len() } else { self.chunk };
        self.first = false;
        let n = limit.min(buf.len()).min(self.bytes.len());
        let (head, tail) = self.bytes.split_at(n);
        buf[..n].copy_from_slice(head);
        self.bytes = tail;
        Ok(n)
    }
}

fn read(
    bytes: &[u8],
    capacity: usize,
    chunk: usize,
) -> (Vec<Vec<u8>>, FileSummary, Option<String>) {
    let input = ShortReads {
        bytes,
        first: true,
        chunk,
    };
    let mut packets = Vec::new();
    let (summary, result) = read_capture(input, Path::new("fuzz"), capacity, |p| {
        packets.push(p.data.to_vec())
    });
    (packets, summary, result.err().map(|e| e.to_string()))
}

fuzz_target!(|data: &[u8]| {
    let [chunk, capacity, file @ ..] = data else {
        return;
    };
    let chunk = usize::from(*chunk).max(1);
    let capacity = 64 + usize::from(*capacity) * 16;
    let pieces = read(file, capacity, chunk);
    assert_eq!(pieces.1.packets as usize, pieces.0.len());
    assert!(pieces.1.skipped_bytes <= file.len() as u64);
    assert!(pieces.1.resynchronisations <= pieces.1.corrupt_records);
    let whole = read(file, file.len() + 64, file.len() + 64);
    // Only where the file header or first section header fits the small buffer is the
    // comparison fair: otherwise the small read fails to open what the large one opens.
    if pieces
        .2
        .as_deref()
        .is_none_or(|e| !e.contains("not a pcap or pcapng file"))
    {
        assert_eq!(pieces, whole);
    }
});
