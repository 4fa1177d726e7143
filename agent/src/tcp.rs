//! TCP stream reassembly for one direction of one connection: in-order delivery of payload
//! bytes, retransmissions and overlaps trimmed, out-of-order segments held (bounded), and gaps
//! reported when the missing bytes will not come (the peer acknowledged past them, the hold
//! buffer is full, too many segments waited, or the connection ended).

use std::collections::BTreeMap;

use mamori_models::Timestamp;

/// Limits of one direction's hold buffer.
#[derive(Clone, Copy, Debug)]
pub struct StreamLimits {
    /// Out-of-order bytes held per direction.
    pub max_held_bytes: usize,
    /// Out-of-order segments held before the hole in front of them is declared lost.
    pub max_held_segments: usize,
}

impl Default for StreamLimits {
    fn default() -> Self {
        StreamLimits {
            max_held_bytes: 256 * 1024,
            max_held_segments: 64,
        }
    }
}

/// What reassembly hands to the protocol layer, in stream order.
#[derive(Debug, PartialEq, Eq)]
pub enum Chunk<'a> {
    /// Bytes, with the capture time of the segment that carried them (a segment held behind a
    /// hole keeps its own time).
    Data(&'a [u8], Timestamp),
    /// This many bytes are missing from the stream here.
    Gap(u64),
}

/// Counters reassembly adds to; the pipeline owns them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamCounters {
    /// Segments whose payload had been delivered already.
    pub retransmissions: u64,
    /// Segments held because they arrived ahead of a hole.
    pub out_of_order: u64,
    pub gaps: u64,
    pub gap_bytes: u64,
}

/// One direction of a TCP connection.
#[derive(Debug, Default)]
pub struct StreamReassembler {
    /// The sequence number of the next byte expected; `None` until the first segment.
    next_seq: Option<u32>,
    /// Stream offset of `next_seq` (bytes delivered or skipped so far).
    next_off: u64,
    /// Held segments by stream offset.
    held: BTreeMap<u64, (Timestamp, Vec<u8>)>,
    held_bytes: usize,
}

impl StreamReassembler {
    /// Bytes held out of order.
    pub fn held_bytes(&self) -> usize {
        self.held_bytes
    }

    /// A SYN from this side: the stream starts after its sequence number.
    pub fn on_syn(&mut self, seq: u32) {
        if self.next_seq.is_none() {
            self.next_seq = Some(seq.wrapping_add(1));
        }
    }

    /// Adds one segment's payload; `missing` bytes after it were cut off by the snap length.
    /// `deliver` receives the in-order chunks this segment made available.
    #[allow(clippy::too_many_arguments)]
    pub fn on_segment(
        &mut self,
        seq: u32,
        ts: Timestamp,
        payload: &[u8],
        missing: u32,
        limits: &StreamLimits,
        counters: &mut StreamCounters,
        deliver: &mut dyn FnMut(Chunk<'_>),
    ) {
        let total = payload.len() as u64 + u64::from(missing);
        if total == 0 {
            return;
        }
        // A connection picked up mid-stream starts at its first data segment.
        let next = *self.next_seq.get_or_insert(seq);
        let diff = i64::from(seq.wrapping_sub(next) as i32);
        if diff <= 0 {
            let skip = diff.unsigned_abs();
            if skip >= total {
                counters.retransmissions += 1;
                return;
            }
            let skip = skip as usize;
            if let Some(fresh) = payload.get(skip..).filter(|p| !p.is_empty()) {
                self.advance(fresh.len() as u64);
                deliver(Chunk::Data(fresh, ts));
            }
            let lost = total - (skip.max(payload.len()) as u64);
            if lost > 0 {
                self.skip_gap(lost, counters, deliver);
            }
            self.drain(counters, deliver);
        } else {
            counters.out_of_order += 1;
            let off = self.next_off + diff as u64;
            self.hold(off, ts, payload, missing);
            if self.held_bytes > limits.max_held_bytes || self.held.len() > limits.max_held_segments
            {
                self.skip_to_held(counters, deliver);
            }
        }
    }

    /// An acknowledgement from the other side: bytes it acknowledged that we never saw are lost
    /// from the capture, so any hold waiting on them can go.
    pub fn on_peer_ack(
        &mut self,
        ack: u32,
        counters: &mut StreamCounters,
        deliver: &mut dyn FnMut(Chunk<'_>),
    ) {
        let Some(next) = self.next_seq else { return };
        let diff = i64::from(ack.wrapping_sub(next) as i32);
        if diff <= 0 || self.held.is_empty() {
            return;
        }
        let ack_off = self.next_off + diff as u64;
        if self
            .held
            .keys()
            .next()
            .is_some_and(|&first| first <= ack_off)
        {
            self.skip_to_held(counters, deliver);
        }
    }

    /// The connection ended (FIN, RST, timeout or end of input): deliver what is held, with the
    /// gaps between.
    pub fn flush(&mut self, counters: &mut StreamCounters, deliver: &mut dyn FnMut(Chunk<'_>)) {
        while !self.held.is_empty() {
            self.skip_to_held(counters, deliver);
        }
    }

    fn advance(&mut self, n: u64) {
        self.next_off += n;
        if let Some(s) = self.next_seq.as_mut() {
            *s = s.wrapping_add(n as u32);
        }
    }

    fn skip_gap(
        &mut self,
        n: u64,
        counters: &mut StreamCounters,
        deliver: &mut dyn FnMut(Chunk<'_>),
    ) {
        counters.gaps += 1;
        counters.gap_bytes += n;
        self.advance(n);
        deliver(Chunk::Gap(n));
    }

    fn hold(&mut self, off: u64, ts: Timestamp, payload: &[u8], missing: u32) {
        // Keep the longer of two segments held at the same offset (a retransmission that
        // carries more).
        let keep = match self.held.get(&off) {
            Some((_, existing)) => payload.len() > existing.len(),
            None => true,
        };
        if keep && !payload.is_empty() {
            if let Some((_, old)) = self.held.insert(off, (ts, payload.to_vec())) {
                self.held_bytes -= old.len();
            }
            self.held_bytes += payload.len();
        }
        if missing > 0 {
            // Remember that the bytes after this segment are lost: an empty entry marks it.
            let end = off + payload.len() as u64;
            self.held.entry(end).or_insert((ts, Vec::new()));
        }
    }

    /// Declares the hole before the first held segment lost and delivers from there.
    fn skip_to_held(&mut self, counters: &mut StreamCounters, deliver: &mut dyn FnMut(Chunk<'_>)) {
        let Some(&first) = self.held.keys().next() else {
            return;
        };
        if first > self.next_off {
            self.skip_gap(first - self.next_off, counters, deliver);
        }
        self.drain(counters, deliver);
        // An empty marker entry (snaplen cut) left in front: the bytes behind it are lost
        // until the next held segment.
        if let Some((&off, (_, data))) = self.held.iter().next()
            && off <= self.next_off
            && data.is_empty()
        {
            self.held.remove(&off);
            if let Some(&next) = self.held.keys().next() {
                if next > self.next_off {
                    self.skip_gap(next - self.next_off, counters, deliver);
                }
                self.drain(counters, deliver);
            }
        }
    }

    /// Delivers held segments that are now in order.
    fn drain(&mut self, counters: &mut StreamCounters, deliver: &mut dyn FnMut(Chunk<'_>)) {
        while let Some(entry) = self.held.first_entry() {
            let off = *entry.key();
            if off > self.next_off {
                break;
            }
            if entry.get().1.is_empty() && off == self.next_off {
                // Leave the "lost after here" marker for skip_to_held to act on.
                break;
            }
            let (ts, data) = entry.remove();
            self.held_bytes -= data.len();
            let skip = (self.next_off - off) as usize;
            match data.get(skip..) {
                Some(fresh) if !fresh.is_empty() => {
                    self.advance(fresh.len() as u64);
                    deliver(Chunk::Data(fresh, ts));
                }
                _ => counters.retransmissions += 1,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(r: &mut StreamReassembler, seq: u32, data: &[u8], got: &mut Vec<u8>, gaps: &mut u64) {
        let mut c = StreamCounters::default();
        r.on_segment(
            seq,
            Timestamp::from_micros(0),
            data,
            0,
            &StreamLimits::default(),
            &mut c,
            &mut |ch| match ch {
                Chunk::Data(d, _) => got.extend_from_slice(d),
                Chunk::Gap(n) => *gaps += n,
            },
        );
    }

    #[test]
    fn in_order_retransmitted_overlapping_and_out_of_order() {
        let mut r = StreamReassembler::default();
        r.on_syn(99);
        let (mut got, mut gaps) = (Vec::new(), 0);
        run(&mut r, 100, b"abc", &mut got, &mut gaps);
        run(&mut r, 100, b"abc", &mut got, &mut gaps); // retransmission
        run(&mut r, 106, b"ghi", &mut got, &mut gaps); // ahead of a hole
        run(&mut r, 102, b"cdef", &mut got, &mut gaps); // overlaps and fills
        assert_eq!((got.as_slice(), gaps), (&b"abcdefghi"[..], 0));
    }

    #[test]
    fn sequence_numbers_wrap() {
        let mut r = StreamReassembler::default();
        let (mut got, mut gaps) = (Vec::new(), 0);
        run(&mut r, u32::MAX - 1, b"ab", &mut got, &mut gaps);
        run(&mut r, 2, b"ef", &mut got, &mut gaps);
        run(&mut r, 0, b"cd", &mut got, &mut gaps);
        assert_eq!((got.as_slice(), gaps), (&b"abcdef"[..], 0));
    }

    #[test]
    fn acknowledged_hole_becomes_a_gap() {
        let mut r = StreamReassembler::default();
        let (mut got, mut gaps) = (Vec::new(), 0u64);
        run(&mut r, 1000, b"aaaa", &mut got, &mut gaps);
        run(&mut r, 1008, b"cccc", &mut got, &mut gaps);
        let mut c = StreamCounters::default();
        r.on_peer_ack(1012, &mut c, &mut |ch| match ch {
            Chunk::Data(d, _) => got.extend_from_slice(d),
            Chunk::Gap(n) => gaps += n,
        });
        assert_eq!((got.as_slice(), gaps), (&b"aaaacccc"[..], 4));
    }
}
