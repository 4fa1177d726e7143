//! Splitting a syslog byte stream (TCP, a file, stdin) into messages.
//!
//! Owns the two framings of RFC 6587: non-transparent (LF-delimited, §3.4.2) and octet
//! counting (`MSG-LEN SP SYSLOG-MSG`, §3.4.1). The framing is fixed per stream, or detected
//! from its first byte: a digit means octet counting (a syslog message starts with `<`).
//!
//! Every buffer is bounded by the maximum message size: a longer LF-delimited message is cut,
//! returned with `truncated` set, and the rest of it is discarded (counted) up to the next LF.
//! Over UDP (RFC 5426) a datagram is one message and needs no framer.
//!
//! An octet-counting length is trusted only when it could be one: a number of at most the
//! maximum message size. Anything else (not a number, a leading zero, more than ten digits,
//! above the maximum) is counted in `bad_length_total` and the framer resynchronises: the bytes
//! that follow are one message of unknown length (cut at the maximum like any other), ended by
//! a LF or by the next plausible frame, `MSG-LEN SP <PRI>` whose own end is followed by another
//! frame or by the end of the stream. Trusting a length of `9999999999` would swallow every
//! frame after it; a hostile or broken sender must not be able to silence its own stream that
//! way, nor make the framer hold more than the maximum. The resynchronisation decides from the
//! bytes alone, never from where reads happened to end, so segmentation still does not matter.

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
    /// Bytes dropped: the excess of over-long messages, and the length prefixes that could not
    /// be right.
    pub discarded_bytes_total: u64,
    /// Octet-counting length prefixes that could not be right (not a number, or above the
    /// maximum message size); each starts a resynchronisation.
    pub bad_length_total: u64,
}

/// RFC 6587 MSG-LEN: NONZERO-DIGIT *DIGIT; more than 10 digits is not a length we accept.
const MSG_LEN_MAX_DIGITS: usize = 10;
/// RFC 5424 §6.2.1: PRIVAL is 1 to 3 digits.
const PRI_MAX_DIGITS: usize = 3;
/// Line ends a sender may put between octet-counted frames (skipped when checking that a frame
/// is followed by another).
const MAX_LINE_ENDS_BETWEEN_FRAMES: usize = 2;
/// Consecutive state changes that consume nothing (see `run`).
const MAX_IDLE_STEPS: usize = 3;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Octet counting: reading the MSG-LEN digits (kept in `buf`).
    Length,
    /// Octet counting: reading `remaining` bytes of the message body (`remaining` is at most
    /// the maximum message size, so `buf` never grows past it).
    Body { remaining: usize },
    /// Reading up to the next LF (LF framing).
    Line,
    /// Dropping the rest of an over-long line, up to LF.
    Discard,
    /// Octet counting after a length that could not be right: `buf` holds the bytes since;
    /// none of its first `scanned` starts a frame. `cut`: more than the maximum message size
    /// of them was already seen and emitted, so the rest, up to the next frame, is discarded.
    Resync { scanned: usize, cut: bool },
}

/// A stream framer with bounded memory.
#[derive(Debug)]
pub struct StreamFramer {
    framing: Option<Framing>,
    max_message_bytes: usize,
    buf: Vec<u8>,
    state: State,
    stats: FramerStats,
    /// Bytes a resynchronisation hands back to be framed again from the frame start it found.
    replay: Vec<u8>,
    /// Inside `finish`: no more bytes will come, so what waited for them can be decided.
    at_end: bool,
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
            replay: Vec::new(),
            at_end: false,
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

    /// Bytes held for a message not yet complete (at most about twice the maximum message
    /// size while resynchronising, else at most the maximum).
    pub fn buffered_bytes(&self) -> usize {
        self.buf.len()
    }

    /// Feeds bytes; complete messages are appended to `out`.
    pub fn push(&mut self, bytes: &[u8], out: &mut Vec<Frame>) {
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
        self.run(bytes, out);
        self.run_replays(out);
    }

    fn run(&mut self, mut bytes: &[u8], out: &mut Vec<Frame>) {
        // A pass either consumes bytes or changes state without consuming (length prefix to
        // resynchronisation, line to discard); those transitions cannot cycle, so more than
        // `MAX_IDLE_STEPS` passes in a row without consuming is a bug, and we stop rather than
        // spin.
        let mut idle = 0;
        while !bytes.is_empty() && idle <= MAX_IDLE_STEPS {
            let before = bytes.len();
            bytes = self.step(bytes, out);
            idle = if bytes.len() < before { 0 } else { idle + 1 };
        }
    }

    /// Frames again what resynchronisations handed back. Each round is shorter than the one
    /// before (it starts with a whole frame start, which the next round consumes); a round that
    /// is not would be a bug, and is dropped (counted) rather than looped on.
    fn run_replays(&mut self, out: &mut Vec<Frame>) {
        let mut last = usize::MAX;
        while !self.replay.is_empty() {
            let bytes = std::mem::take(&mut self.replay);
            if bytes.len() >= last {
                self.stats.discarded_bytes_total += bytes.len() as u64;
                break;
            }
            last = bytes.len();
            self.run(&bytes, out);
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
                        self.state = State::Discard;
                        bytes.get(room..).unwrap_or_default()
                    }
                }
            }
            State::Discard => match bytes.iter().position(|&c| c == b'\n') {
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
            State::Length => {
                let Some((&c, rest)) = bytes.split_first() else {
                    return bytes;
                };
                match c {
                    // A length cannot start with 0, nor have more than 10 digits.
                    b'0'..=b'9'
                        if self.buf.len() < MSG_LEN_MAX_DIGITS
                            && !(self.buf.is_empty() && c == b'0') =>
                    {
                        self.buf.push(c);
                        rest
                    }
                    b' ' if !self.buf.is_empty() => {
                        match msg_len(&self.buf, self.max_message_bytes) {
                            Some(len) => {
                                self.buf.clear();
                                self.state = State::Body { remaining: len };
                            }
                            None => {
                                // Above the maximum: whatever the sender meant, the bytes
                                // after it are not trusted to be one message (the prefix is
                                // dropped: it is not part of the message).
                                self.stats.bad_length_total += 1;
                                self.stats.discarded_bytes_total += self.buf.len() as u64 + 1;
                                self.buf.clear();
                                self.resync();
                            }
                        }
                        rest
                    }
                    // Stray line ends between frames (some senders add them).
                    b'\n' | b'\r' if self.buf.is_empty() => rest,
                    _ => {
                        // Not a length: keep what was taken for digits as text (a sender of
                        // LF-delimited lines that start with a digit lands here), and look for
                        // the end of this message.
                        self.stats.bad_length_total += 1;
                        self.resync();
                        bytes
                    }
                }
            }
            State::Body { remaining } => {
                let k = remaining.min(bytes.len());
                self.buf
                    .extend_from_slice(bytes.get(..k).unwrap_or_default());
                let left = remaining - k;
                if left == 0 {
                    self.emit(false, out);
                    self.state = State::Length;
                } else {
                    self.state = State::Body { remaining: left };
                }
                bytes.get(k..).unwrap_or_default()
            }
            State::Resync { .. } => {
                self.buf.extend_from_slice(bytes);
                self.resolve(out);
                &[]
            }
        }
    }

    fn after_line(&mut self) {
        self.state = Self::initial_state(self.framing);
    }

    fn resync(&mut self) {
        self.state = State::Resync {
            scanned: 0,
            cut: false,
        };
    }

    /// Looks for the end of the message being resynchronised on. Found: the message is
    /// emitted and the bytes from the frame start on are handed back (`replay`). Not yet: the
    /// bytes known to be part of the message are bounded (emitted cut at the maximum, then
    /// discarded).
    fn resolve(&mut self, out: &mut Vec<Frame>) {
        let State::Resync { scanned, cut } = self.state else {
            return;
        };
        match scan_for_frame(&self.buf, scanned, self.max_message_bytes, self.at_end) {
            Scan::Boundary { junk_end, resume } => {
                self.replay = self.buf.get(resume..).unwrap_or_default().to_vec();
                self.buf.truncate(junk_end);
                self.end_junk(cut, out);
                self.state = State::Length;
            }
            Scan::Undecided(scanned) => {
                self.state = State::Resync { scanned, cut };
                self.bound_junk(out);
            }
        }
    }

    /// Ends the message of unknown length held in `buf`.
    fn end_junk(&mut self, cut: bool, out: &mut Vec<Frame>) {
        if cut {
            self.stats.discarded_bytes_total += self.buf.len() as u64;
            self.buf.clear();
        } else if self.buf.len() > self.max_message_bytes {
            self.stats.discarded_bytes_total += (self.buf.len() - self.max_message_bytes) as u64;
            self.buf.truncate(self.max_message_bytes);
            self.emit(true, out);
        } else {
            self.emit_line(false, out);
        }
    }

    /// Keeps the message being resynchronised on within the maximum: past it, the first
    /// `max_message_bytes` are emitted as a cut message and the rest is discarded as it is
    /// scanned.
    fn bound_junk(&mut self, out: &mut Vec<Frame>) {
        let State::Resync { scanned, cut } = self.state else {
            return;
        };
        if !cut && scanned <= self.max_message_bytes {
            return;
        }
        let mut junk: Vec<u8> = self.buf.drain(..scanned.min(self.buf.len())).collect();
        if cut {
            self.stats.discarded_bytes_total += junk.len() as u64;
        } else {
            self.stats.discarded_bytes_total +=
                junk.len().saturating_sub(self.max_message_bytes) as u64;
            junk.truncate(self.max_message_bytes);
            self.push_frame(junk, true, out);
        }
        self.state = State::Resync {
            scanned: 0,
            cut: true,
        };
    }

    fn emit_line(&mut self, truncated: bool, out: &mut Vec<Frame>) {
        if !truncated && self.buf.last() == Some(&b'\r') {
            self.buf.pop();
        }
        self.emit(truncated, out);
    }

    fn emit(&mut self, truncated: bool, out: &mut Vec<Frame>) {
        let bytes = std::mem::take(&mut self.buf);
        self.push_frame(bytes, truncated, out);
    }

    fn push_frame(&mut self, bytes: Vec<u8>, truncated: bool, out: &mut Vec<Frame>) {
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
        self.at_end = true;
        self.resolve(out);
        self.run_replays(out);
        match self.state {
            State::Line => self.emit_line(false, out),
            State::Body { .. } => self.emit(true, out),
            State::Length => {
                // Digits with no SP after them: not a frame, keep them as text.
                self.emit(false, out);
            }
            State::Discard => self.buf.clear(),
            State::Resync { cut, .. } => self.end_junk(cut, out),
        }
        self.state = Self::initial_state(self.framing);
        self.at_end = false;
    }
}

/// The value of a MSG-LEN, when it is one we accept: 1 to 10 digits, no leading zero, at most
/// `max`.
fn msg_len(digits: &[u8], max: usize) -> Option<usize> {
    if digits.is_empty()
        || digits.len() > MSG_LEN_MAX_DIGITS
        || digits.first() == Some(&b'0')
        || !digits.iter().all(u8::is_ascii_digit)
    {
        return None;
    }
    let v = digits
        .iter()
        .fold(0u64, |v, &d| v * 10 + u64::from(d - b'0'));
    usize::try_from(v).ok().filter(|&v| v <= max)
}

/// Whether something holds, does not, or cannot be told before more bytes arrive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tri {
    Yes,
    No,
    NeedMore,
}

/// Where a resynchronisation stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scan {
    /// The message ends at `junk_end`; framing goes on at `resume`.
    Boundary { junk_end: usize, resume: usize },
    /// No frame starts before this offset; what follows needs more bytes to be told.
    Undecided(usize),
}

/// What a run of digits is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Run {
    /// A frame starts at this offset (inside the run: the digits before it end the message).
    Frame(usize),
    /// Not a frame start; scanning goes on at this offset.
    No(usize),
    Wait,
}

/// Finds, from `from`, the first LF or the first plausible frame start in `p`.
fn scan_for_frame(p: &[u8], from: usize, max: usize, at_end: bool) -> Scan {
    let mut i = from;
    while let Some(&c) = p.get(i) {
        if c == b'\n' {
            return Scan::Boundary {
                junk_end: i,
                resume: i + 1,
            };
        }
        let run_start =
            c.is_ascii_digit() && (i == 0 || !p.get(i - 1).is_some_and(u8::is_ascii_digit));
        if run_start {
            match frame_in_digit_run(p, i, max, at_end) {
                Run::Frame(s) => {
                    return Scan::Boundary {
                        junk_end: s,
                        resume: s,
                    };
                }
                Run::Wait => return Scan::Undecided(i),
                Run::No(next) => {
                    i = next;
                    continue;
                }
            }
        }
        i += 1;
    }
    Scan::Undecided(p.len())
}

/// Whether the digit run starting at `i` ends with a MSG-LEN that starts a frame. A message
/// may end with digits ("port 1" then "54 <13>..." reads "port 154 <13>..."), so every suffix
/// of the run is a candidate length; one is taken only when the frame it announces is
/// followed by another frame start or by the end of the stream. Shortest first: a shorter
/// candidate is decided with fewer bytes, so the frame is not held back waiting for the end
/// of a longer one that is almost never right (the sum of a message's last digits and the
/// next length).
fn frame_in_digit_run(p: &[u8], i: usize, max: usize, at_end: bool) -> Run {
    let tail = p.get(i..).unwrap_or_default();
    let j = i + tail.iter().take_while(|c| c.is_ascii_digit()).count();
    match pri_follows(p, j) {
        Tri::Yes => {}
        Tri::No => return Run::No(j),
        Tri::NeedMore if at_end => return Run::No(j),
        Tri::NeedMore => return Run::Wait,
    }
    let body = j + 1;
    for s in (j.saturating_sub(MSG_LEN_MAX_DIGITS).max(i)..j).rev() {
        let Some(len) = msg_len(p.get(s..j).unwrap_or_default(), max) else {
            continue;
        };
        let Some(end) = body.checked_add(len) else {
            continue;
        };
        match frame_ends_well(p, end, max, at_end) {
            Tri::Yes => return Run::Frame(s),
            Tri::No => continue,
            Tri::NeedMore => return Run::Wait,
        }
    }
    Run::No(j)
}

/// `SP <PRI>` at `j`: what an octet-counted syslog message looks like after its MSG-LEN.
fn pri_follows(p: &[u8], j: usize) -> Tri {
    match p.get(j) {
        None => return Tri::NeedMore,
        Some(b' ') => {}
        Some(_) => return Tri::No,
    }
    match p.get(j + 1) {
        None => return Tri::NeedMore,
        Some(b'<') => {}
        Some(_) => return Tri::No,
    }
    let mut digits = 0;
    for &c in p.get(j + 2..).unwrap_or_default() {
        match c {
            b'0'..=b'9' if digits < PRI_MAX_DIGITS => digits += 1,
            b'>' if digits > 0 => return Tri::Yes,
            _ => return Tri::No,
        }
    }
    Tri::NeedMore
}

/// Whether a frame ending at `end` is followed (after a line end or two) by another frame
/// start, or by the end of the stream.
fn frame_ends_well(p: &[u8], end: usize, max: usize, at_end: bool) -> Tri {
    let Some(rest) = p.get(end..) else {
        return if at_end { Tri::No } else { Tri::NeedMore };
    };
    let line_ends = rest
        .iter()
        .take(MAX_LINE_ENDS_BETWEEN_FRAMES)
        .take_while(|&&c| c == b'\r' || c == b'\n')
        .count();
    let rest = rest.get(line_ends..).unwrap_or_default();
    if rest.is_empty() {
        return if at_end { Tri::Yes } else { Tri::NeedMore };
    }
    match frame_start(rest, max) {
        // The stream ended inside what looks like a frame start.
        Tri::NeedMore if at_end => Tri::Yes,
        t => t,
    }
}

/// Whether `p` starts with `MSG-LEN SP <PRI>`.
fn frame_start(p: &[u8], max: usize) -> Tri {
    let digits = p
        .iter()
        .take(MSG_LEN_MAX_DIGITS + 1)
        .take_while(|c| c.is_ascii_digit())
        .count();
    if digits > MSG_LEN_MAX_DIGITS || (digits == 0 && !p.is_empty()) {
        return Tri::No;
    }
    if digits == p.len() {
        return Tri::NeedMore;
    }
    if msg_len(p.get(..digits).unwrap_or_default(), max).is_none() {
        return Tri::No;
    }
    pri_follows(p, digits)
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

    fn got(out: &[Frame]) -> Vec<(String, bool)> {
        out.iter()
            .map(|f| (String::from_utf8_lossy(&f.bytes).into_owned(), f.truncated))
            .collect()
    }

    /// `MSG-LEN SP msg`.
    fn oc(msg: &str) -> String {
        format!("{} {msg}", msg.len())
    }

    #[test]
    fn octet_counting_over_max_is_flagged_and_resyncs_on_the_next_frame() {
        let mut f = StreamFramer::new(Some(Framing::OctetCounting), 8);
        let mut out = Vec::new();
        let stream = format!("12 <1>abcdefgh{}", oc("<2>ok"));
        f.push(stream.as_bytes(), &mut out);
        f.finish(&mut out);
        assert_eq!(
            got(&out),
            [("<1>abcde".into(), true), ("<2>ok".into(), false)]
        );
        assert_eq!(f.stats().bad_length_total, 1);
        // The prefix "12 " and the 3 bytes past the maximum.
        assert_eq!(f.stats().discarded_bytes_total, 3 + 3);
    }

    /// The regression of the issue: a length of 9999999999 was trusted, so the framer waited
    /// for ten billion bytes and swallowed every frame after it.
    #[test]
    fn implausible_length_does_not_swallow_the_frames_after_it() {
        let first = "<13>1 2024-01-02T03:04:05Z plc-7 app 42 - - bogus length";
        let second = "<13>1 2024-01-02T03:04:05Z plc-7 app 42 - - message 2";
        let third = "<13>1 2024-01-02T03:04:05Z plc-7 app 42 - - message 3";
        let stream = format!("9999999999 {first}{}{}", oc(second), oc(third));
        let mut f = StreamFramer::new(None, 1024);
        let mut out = Vec::new();
        f.push(stream.as_bytes(), &mut out);
        // Both are delivered before the stream ends: the second is followed by a frame start,
        // and the third is in step again.
        assert_eq!(
            got(&out),
            [
                (first.into(), false),
                (second.into(), false),
                (third.into(), false)
            ]
        );
        f.finish(&mut out);
        assert_eq!(out.len(), 3);
        assert_eq!(f.stats().bad_length_total, 1);
    }

    #[test]
    fn a_message_ending_in_digits_before_the_next_frame_is_split_right() {
        // "... port 1" + "54 <13>..." reads as "...port 154 <13>": 4, 54 and 154 are all
        // candidate lengths; only 54 ends where another frame starts.
        let first = "<13>1 - h a - - - port 1";
        let second = "<13>1 2024-01-02T03:04:05Z plc-7 app 42 - - message 2";
        let third = "<13>1 - h a - - - port 33";
        let stream = format!("99999 {first}{}{}", oc(second), oc(third));
        for cut in 0..=stream.len() {
            let (a, b) = stream.as_bytes().split_at(cut);
            let out = frames(None, 1000, &[a, b]);
            assert_eq!(
                got(&out),
                [
                    (first.into(), false),
                    (second.into(), false),
                    (third.into(), false)
                ],
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn resync_waits_for_the_frame_end_and_the_stream_end_decides() {
        let mut f = StreamFramer::new(Some(Framing::OctetCounting), 100);
        let mut out = Vec::new();
        f.push(b"500 <1>junk 7 <2>abc", &mut out);
        assert_eq!(got(&out), [], "7 <2>... is not whole yet");
        f.push(b"d", &mut out);
        assert_eq!(got(&out), [], "whole, but is it followed by a frame?");
        f.finish(&mut out);
        assert_eq!(
            got(&out),
            [("<1>junk ".into(), false), ("<2>abcd".into(), false)]
        );
    }

    #[test]
    fn lines_that_start_with_a_digit_are_read_as_lines() {
        // A sender of LF-delimited lines without PRI is detected as octet counting by its first
        // byte; every line is still a message.
        let out = frames(
            None,
            100,
            &[
                b"2024-01-02 plc-7 boot\n1700000000 plc-7 up\r\n",
                b"x 5 y\n",
            ],
        );
        assert_eq!(
            got(&out),
            [
                ("2024-01-02 plc-7 boot".into(), false),
                ("plc-7 up".into(), false),
                ("x 5 y".into(), false)
            ]
        );
    }

    #[test]
    fn resync_junk_is_bounded_by_the_maximum() {
        let mut f = StreamFramer::new(Some(Framing::OctetCounting), 16);
        let mut out = Vec::new();
        let junk = "<1>".to_string() + &"x".repeat(10_000);
        f.push(format!("99 {junk}").as_bytes(), &mut out);
        assert!(f.buffered_bytes() <= 16, "{}", f.buffered_bytes());
        f.push(oc("<2>ok").as_bytes(), &mut out);
        f.finish(&mut out);
        assert_eq!(
            got(&out),
            [(junk[..16].to_string(), true), ("<2>ok".into(), false)]
        );
        assert_eq!(
            f.stats().discarded_bytes_total,
            3 + (junk.len() as u64 - 16)
        );
    }

    #[test]
    fn resync_never_buffers_much_more_than_the_maximum() {
        // A candidate frame start that announces the maximum keeps the framer waiting for its
        // end, and no longer.
        let max = 64;
        let mut f = StreamFramer::new(Some(Framing::OctetCounting), max);
        let mut out = Vec::new();
        f.push(b"65 <1>", &mut out);
        for _ in 0..1000 {
            f.push(format!("a {max} <2>").as_bytes(), &mut out);
            assert!(f.buffered_bytes() <= 2 * max + 32, "{}", f.buffered_bytes());
        }
        f.finish(&mut out);
        assert!(out.iter().all(|fr| fr.bytes.len() <= max));
    }

    fn tokens() -> impl proptest::strategy::Strategy<Value = Vec<String>> {
        use proptest::prelude::*;
        let token = prop_oneof![
            "[a-z0-9 ]{0,12}".prop_map(|m| oc(&format!("<13>{m}"))),
            Just("9999999999 ".to_string()),
            Just("99 ".to_string()),
            Just("0".to_string()),
            Just("\n".to_string()),
            Just(" <1>".to_string()),
            "[0-9]{1,3}".prop_map(|d| d),
            "[a-z <>]{1,8}".prop_map(|t| t),
        ];
        proptest::collection::vec(token, 0..24)
    }

    proptest::proptest! {
        /// Resynchronisation decides from the bytes alone: where the reads end does not
        /// change the frames, and no frame is longer than the maximum.
        #[test]
        fn resync_does_not_depend_on_segmentation(
            tokens in tokens(),
            cuts in proptest::collection::vec(0usize..400, 0..6),
            max in 8usize..64,
        ) {
            let stream = tokens.concat().into_bytes();
            let whole = frames(Some(Framing::OctetCounting), max, &[&stream]);
            let mut at: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
            at.extend([0, stream.len()]);
            at.sort_unstable();
            let chunks: Vec<&[u8]> = at.windows(2).map(|w| &stream[w[0]..w[1]]).collect();
            let split = frames(Some(Framing::OctetCounting), max, &chunks);
            proptest::prop_assert_eq!(&whole, &split);
            for f in &whole {
                proptest::prop_assert!(f.bytes.len() <= max.max(MSG_LEN_MAX_DIGITS));
            }
        }

        /// Whatever follows a bad length (up to a character that cannot end a MSG-LEN), every
        /// frame after it is delivered whole.
        #[test]
        fn frames_after_a_bad_length_are_all_delivered(
            junk in "[a-z0-9 ]{0,40}",
            msgs in proptest::collection::vec("[a-z0-9 ]{0,30}", 1..6),
            bad in proptest::prop_oneof![
                proptest::prelude::Just("9999999999 "),
                proptest::prelude::Just("2000 "),
                proptest::prelude::Just("x"),
            ],
        ) {
            let junk = format!("{junk}x");
            let msgs: Vec<String> = msgs.iter().map(|m| format!("<13>1 - h a - - - {m}")).collect();
            let stream = format!("{bad}{junk}{}", msgs.iter().map(|m| oc(m)).collect::<String>());
            let out = frames(Some(Framing::OctetCounting), 1000, &[stream.as_bytes()]);
            let texts = got(&out);
            let junk_text = if bad == "x" { format!("x{junk}") } else { junk };
            let mut expected = vec![(junk_text.trim_end_matches('\r').to_string(), false)];
            expected.extend(msgs.iter().map(|m| (m.clone(), false)));
            proptest::prop_assert_eq!(texts, expected);
        }
    }
}
