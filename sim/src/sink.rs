//! Where the tap delivers its frames: a [`FrameSink`]. Two implementations: a classic pcap
//! file ([`PcapFileSink`]) and a bounded tokio channel ([`ChannelSink`]) that a demo drains
//! into the agent pipeline in-process. A full channel drops the frame and counts it (the tap
//! must never block the simulated plant).

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use mamori_models::Timestamp;
use tokio::sync::mpsc;

use crate::error::SimError;

/// `LINKTYPE_ETHERNET`: every frame the tap makes is Ethernet II.
pub const LINKTYPE_ETHERNET: u32 = 1;
const PCAP_MAGIC_MICROS: u32 = 0xA1B2_C3D4;
const SNAPLEN: u32 = 65_535;

/// A consumer of tapped frames, called in capture order (timestamps never go backwards).
pub trait FrameSink: Send + std::fmt::Debug {
    /// One Ethernet frame seen at `ts`.
    fn frame(&mut self, ts: Timestamp, frame: Vec<u8>) -> Result<(), SimError>;
    /// Makes everything delivered so far durable (end of a run).
    fn flush(&mut self) -> Result<(), SimError> {
        Ok(())
    }
    /// Frames this sink had to drop.
    fn dropped(&self) -> u64 {
        0
    }
}

/// Writes a classic pcap file (little-endian, microsecond timestamps, Ethernet).
#[derive(Debug)]
pub struct PcapFileSink {
    path: PathBuf,
    out: BufWriter<File>,
}

impl PcapFileSink {
    /// Creates (truncates) `path` and writes the pcap global header.
    pub fn create(path: &Path) -> Result<Self, SimError> {
        let err = |source| SimError::Capture {
            path: path.display().to_string(),
            source,
        };
        let file = File::create(path).map_err(err)?;
        let mut out = BufWriter::new(file);
        out.write_all(&pcap_header()).map_err(err)?;
        Ok(PcapFileSink {
            path: path.to_owned(),
            out,
        })
    }

    fn err(&self, source: io::Error) -> SimError {
        SimError::Capture {
            path: self.path.display().to_string(),
            source,
        }
    }
}

/// The 24-byte pcap global header.
pub fn pcap_header() -> Vec<u8> {
    let mut h = Vec::with_capacity(24);
    h.extend_from_slice(&PCAP_MAGIC_MICROS.to_le_bytes());
    h.extend_from_slice(&2u16.to_le_bytes()); // version major
    h.extend_from_slice(&4u16.to_le_bytes()); // version minor
    h.extend_from_slice(&0i32.to_le_bytes()); // thiszone
    h.extend_from_slice(&0u32.to_le_bytes()); // sigfigs
    h.extend_from_slice(&SNAPLEN.to_le_bytes());
    h.extend_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
    h
}

/// The 16-byte record header of one frame.
pub fn pcap_record_header(ts: Timestamp, len: usize) -> [u8; 16] {
    let us = ts.as_micros();
    let secs = u32::try_from(us.div_euclid(1_000_000)).unwrap_or(u32::MAX);
    let micros = u32::try_from(us.rem_euclid(1_000_000)).unwrap_or(0);
    let len = u32::try_from(len).unwrap_or(u32::MAX);
    let mut h = [0u8; 16];
    for (dst, src) in h.chunks_mut(4).zip([secs, micros, len, len]) {
        dst.copy_from_slice(&src.to_le_bytes()); // seconds, micros, captured, original length
    }
    h
}

impl FrameSink for PcapFileSink {
    fn frame(&mut self, ts: Timestamp, frame: Vec<u8>) -> Result<(), SimError> {
        let header = pcap_record_header(ts, frame.len());
        let written = self
            .out
            .write_all(&header)
            .and_then(|()| self.out.write_all(&frame));
        written.map_err(|e| self.err(e))
    }

    fn flush(&mut self) -> Result<(), SimError> {
        let flushed = self.out.flush();
        flushed.map_err(|e| self.err(e))
    }
}

/// A frame as the channel carries it.
pub type TappedFrame = (Timestamp, Vec<u8>);

/// Sends frames into a bounded tokio channel; when it is full (or closed) the frame is
/// dropped and counted.
#[derive(Debug)]
pub struct ChannelSink {
    tx: mpsc::Sender<TappedFrame>,
    dropped: u64,
}

impl ChannelSink {
    /// A sink and the receiver to drain, holding at most `capacity` frames.
    pub fn bounded(capacity: usize) -> (Self, mpsc::Receiver<TappedFrame>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (ChannelSink { tx, dropped: 0 }, rx)
    }
}

impl FrameSink for ChannelSink {
    fn frame(&mut self, ts: Timestamp, frame: Vec<u8>) -> Result<(), SimError> {
        if self.tx.try_send((ts, frame)).is_err() {
            self.dropped += 1;
        }
        Ok(())
    }

    fn dropped(&self) -> u64 {
        self.dropped
    }
}

/// Keeps every frame in memory (tests and short runs).
#[derive(Debug, Default)]
pub struct MemorySink {
    pub frames: std::sync::Arc<std::sync::Mutex<Vec<TappedFrame>>>,
}

impl FrameSink for MemorySink {
    fn frame(&mut self, ts: Timestamp, frame: Vec<u8>) -> Result<(), SimError> {
        self.frames
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((ts, frame));
        Ok(())
    }
}

/// Fans every frame out to several sinks (e.g. a pcap file and a channel).
#[derive(Debug, Default)]
pub struct TeeSink {
    pub sinks: Vec<Box<dyn FrameSink>>,
}

impl FrameSink for TeeSink {
    fn frame(&mut self, ts: Timestamp, frame: Vec<u8>) -> Result<(), SimError> {
        let mut result = Ok(());
        for sink in &mut self.sinks {
            if let Err(e) = sink.frame(ts, frame.clone()) {
                result = Err(e);
            }
        }
        result
    }

    fn flush(&mut self) -> Result<(), SimError> {
        let mut result = Ok(());
        for sink in &mut self.sinks {
            if let Err(e) = sink.flush() {
                result = Err(e);
            }
        }
        result
    }

    fn dropped(&self) -> u64 {
        self.sinks.iter().map(|s| s.dropped()).sum()
    }
}
