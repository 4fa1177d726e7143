//! Splitting a syslog byte stream (TCP, a file, stdin) into messages.
//!
//! Owns the two framings of RFC 6587: non-transparent (LF-delimited, §3.4.2) and octet
//! counting (`MSG-LEN SP SYSLOG-MSG`, §3.4.1). The framing is fixed per stream, or detected
//! from its first byte: a digit means octet counting (a syslog message starts with `<`).
//!
//! Every buffer is bounded by the maximum message size: a longer message is cut, returned with
//! `truncated` set, and the rest of it is discarded (counted) up to the next frame boundary.
//! Over UDP (RFC 5426) a datagram is one message and needs no framer.

/// RFC 6587 framing of a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Framing {
    /// Messages end with LF (a CR before it is removed).
    Lf,
    /// Each message is preceded by its length in bytes and a SP.
    OctetCounting,
}

/// One message cut from a stream.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Frame {
    pub bytes: Vec<u8>,
    /// The message was longer than the maximum (or the stream ended inside it) and was cut.
    pub truncated: bool,
}

/// Counters of a framer, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FramerStats {
    pub frames_total: u64,
    pub truncated_total: u64,
    /// Bytes dropped: the excess of over-long messages.
    pub discarded_bytes_total: u64,
    /// Octet-counting frames whose length prefix was not a number (read up to LF instead).
    pub bad_length_total: u64,
}

/// RFC 6587 MSG-LEN: NONZERO-DIGIT *DIGIT; more than 10 digits is not a length we accept.
const MSG_LEN_MAX_DIGITS: usize = 10;
/// Consecutive state changes that consume nothing (see `push`).
const MAX_IDLE_STEPS: usize = 3;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Octet counting: reading the MSG-LEN digits (kept in `buf`).
    Length,
    /// Octet counting: reading `remaining` bytes of the message body.
    Body { remaining: usize },
    /// Reading up to the next LF (LF framing, or an octet-counting stream that lost its way).
    Line,
    /// Dropping the rest of an over-long message: `remaining` bytes, or up to LF when `None`.
    Discard { remaining: Option<usize> },
}

/// A stream framer with bounded memory.
#[derive(Debug)]
pub struct StreamFramer {
    framing: Option<Framing>,
    max_message_bytes: usize,
    buf: Vec<u8>,
    state: State,
    stats: FramerStats,
}

impl StreamFramer {
    /// `framing: None` detects it from the first byte of the stream.
    pub fn new(framing: Option<Framing>, max_message_bytes: usize) -> Self {
        let max_message_bytes = max_message_bytes.max(1);
        StreamFramer {
            framing,
            max_message_bytes,
            buf: Vec::new(),
            state: Self::initial_state(framing),
            stats: FramerStats::default(),
        }
    }

    fn initial_state(framing: Option<Framing>) -> State {
        match framing {
            Some(Framing::OctetCounting) => State::Length,
            _ => State::Line,
        }
    }

    /// The framing in use (`None` until the first byte when detecting).
    pub fn framing(&self) -> Option<Framing> {
        self.framing
    }

    pub fn stats(&self) -> FramerStats {
        self.stats
    }

    /// Feeds bytes; complete messages are appended to `out`.
    pub fn push(&mut self, mut bytes: &[u8], out: &mut Vec<Frame>) {
        if self.framing.is_none() {
            match bytes.first() {
                None => return,
                Some(c) => {
                    let f = if c.is_ascii_digit() {
                        Framing::OctetCounting
                    } else {
                        Framing::Lf
                    };
                    self.framing = Some(f);
                    self.state = Self::initial_state(Some(f));
                }
            }
        }
        // A pass either consumes bytes or changes state without consuming (length prefix to
        // line, line to discard); those transitions cannot cycle, so more than
        // `MAX_IDLE_STEPS` passes in a row without consuming is a bug, and we stop rather than
        // spin.
        let mut idle = 0;
        while !bytes.is_empty() && idle <= MAX_IDLE_STEPS {
            let before = bytes.len();
            bytes = self.step(bytes, out);
            idle = if bytes.len() < before { 0 } else { idle + 1 };
        }
    }

    fn step<'a>(&mut self, bytes: &'a [u8], out: &mut Vec<Frame>) -> &'a [u8] {
        match self.state {
            State::Line => {
                let room = self.max_message_bytes.saturating_sub(self.buf.len());
                let lf = bytes.iter().position(|&c| c == b'\n');
                match lf {
                    Some(p) if p <= room => {
                        self.buf
                            .extend_from_slice(bytes.get(..p).unwrap_or_default());
                        self.emit_line(false, out);
                        self.after_line();
                        bytes.get(p + 1..).unwrap_or_default()
                    }
                    _ if bytes.len() < room || (lf.is_none() && bytes.len() == room) => {
                        // No LF yet and still room: keep the bytes for the next push.
                        self.buf.extend_from_slice(bytes);
                        &[]
                    }
                    _ => {
                        // Over the maximum before any LF: cut here, drop the rest of the line.
                        self.buf
                            .extend_from_slice(bytes.get(..room).unwrap_or_default());
                        self.emit_line(true, out);
                        self.state = State::Discard { remaining: None };
                        bytes.get(room..).unwrap_or_default()
                    }
                }
            }
            State::Discard { remaining: None } => match bytes.iter().position(|&c| c == b'\n') {
                Some(p) => {
                    self.stats.discarded_bytes_total += p as u64;
                    self.after_line();
                    bytes.get(p + 1..).unwrap_or_default()
                }
                None => {
                    self.stats.discarded_bytes_total += bytes.len() as u64;
                    &[]
                }
            },
            State::Discard { remaining: Some(n) } => {
                let k = n.min(bytes.len());
                self.stats.discarded_bytes_total += k as u64;
                self.state = if k == n {
                    State::Length
                } else {
                    State::Discard {
                        remaining: Some(n - k),
                    }
                };
                bytes.get(k..).unwrap_or_default()
            }
            State::Length => {
                let Some((&c, rest)) = bytes.split_first() else {
                    return bytes;
                };
                match c {
                    b'0'..=b'9' if self.buf.len() < MSG_LEN_MAX_DIGITS => {
                        if !(self.buf.is_empty() && c == b'0') {
                            self.buf.push(c);
                            return rest;
                        }
                        // A length cannot start with 0: not octet counting here.
                        self.stats.bad_length_total += 1;
                        self.state = State::Line;
                        bytes
                    }
                    b' ' if !self.buf.is_empty() => {
                        let len = self.buf.iter().fold(0usize, |v, &d| {
                            v.saturating_mul(10).saturating_add(usize::from(d - b'0'))
                        });
                        self.buf.clear();
                        self.state = State::Body { remaining: len };
                        rest
                    }
                    // Stray line ends between frames (some senders add them).
                    b'\n' | b'\r' if self.buf.is_empty() => rest,
                    _ => {
                        // Not a length: read up to LF as one message, keeping what was taken
                        // for digits, then look for a length again.
                        self.stats.bad_length_total += 1;
                        self.state = State::Line;
                        bytes
                    }
                }
            }
            State::Body { remaining } => {
                let room = self.max_message_bytes.saturating_sub(self.buf.len());
                let k = remaining.min(bytes.len());
                let keep = k.min(room);
                self.buf
                    .extend_from_slice(bytes.get(..keep).unwrap_or_default());
                let left = remaining - k;
                if keep < k || (left > 0 && self.buf.len() >= self.max_message_bytes) {
                    // The frame is longer than the maximum: emit what fits, discard the rest.
                    let dropped = k - keep;
                    self.stats.discarded_bytes_total += dropped as u64;
                    self.emit(true, out);
                    self.state = if left > 0 {
                        State::Discard {
                            remaining: Some(left),
                        }
                    } else {
                        State::Length
                    };
                } else if left == 0 {
                    self.emit(false, out);
                    self.state = State::Length;
                } else {
                    self.state = State::Body { remaining: left };
                }
                bytes.get(k..).unwrap_or_default()
            }
        }
    }

    fn after_line(&mut self) {
        self.state = Self::initial_state(self.framing);
    }

    fn emit_line(&mut self, truncated: bool, out: &mut Vec<Frame>) {
        if !truncated && self.buf.last() == Some(&b'\r') {
            self.buf.pop();
        }
        self.emit(truncated, out);
    }

    fn emit(&mut self, truncated: bool, out: &mut Vec<Frame>) {
        let bytes = std::mem::take(&mut self.buf);
        // An empty line is not a message.
        if bytes.is_empty() && !truncated {
            return;
        }
        self.stats.frames_total += 1;
        if truncated {
            self.stats.truncated_total += 1;
        }
        out.push(Frame { bytes, truncated });
    }

    /// End of stream: a partial message is returned (an octet-counted one flagged truncated).
    pub fn finish(&mut self, out: &mut Vec<Frame>) {
        match self.state {
            State::Line => self.emit_line(false, out),
            State::Body { .. } => self.emit(true, out),
            State::Length => {
                // Digits with no SP after them: not a frame, keep them as text.
                self.emit(false, out);
            }
            State::Discard { .. } => self.buf.clear(),
        }
        self.state = Self::initial_state(self.framing);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn frames(framing: Option<Framing>, max: usize, chunks: &[&[u8]]) -> Vec<Frame> {
        let mut f = StreamFramer::new(framing, max);
        let mut out = Vec::new();
        for c in chunks {
            f.push(c, &mut out);
        }
        f.finish(&mut out);
        out
    }

    #[test]
    fn octet_counting_detected_and_split_across_chunks() {
        let out = frames(None, 100, &[b"5 <1>1 ", b"3 ab", b"c4 ab"]);
        let got: Vec<_> = out.iter().map(|f| (f.bytes.clone(), f.truncated)).collect();
        assert_eq!(
            got,
            vec![
                (b"<1>1 ".to_vec(), false),
                (b"abc".to_vec(), false),
                (b"ab".to_vec(), true)
            ],
            "the stream ended inside the last frame"
        );
    }

    #[test]
    fn lf_strips_cr_and_truncates_long_lines() {
        let out = frames(Some(Framing::Lf), 4, &[b"ab\r\nabcdefgh\nxy"]);
        let got: Vec<_> = out.iter().map(|f| (f.bytes.clone(), f.truncated)).collect();
        assert_eq!(
            got,
            vec![
                (b"ab".to_vec(), false),
                (b"abcd".to_vec(), true),
                (b"xy".to_vec(), false)
            ]
        );
    }

    #[test]
    fn octet_counting_over_max_is_cut_and_resyncs() {
        let out = frames(Some(Framing::OctetCounting), 3, &[b"6 abcdef2 gh"]);
        let got: Vec<_> = out.iter().map(|f| (f.bytes.clone(), f.truncated)).collect();
        assert_eq!(got, vec![(b"abc".to_vec(), true), (b"gh".to_vec(), false)]);
    }
}
