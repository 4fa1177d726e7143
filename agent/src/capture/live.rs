//! Live passive capture on Linux interfaces: AF_PACKET with a TPACKET_V3 ring (through
//! `netring`, no C library), promiscuous mode, a kernel-side BPF filter, several interfaces,
//! and the kernel's drop counters. The sockets only receive: nothing is ever sent on the
//! monitored network.
//!
//! Each interface has a reader thread that copies frames into a bounded channel; the pipeline
//! runs on the caller's thread, so connections mirrored through two ports are still seen
//! whole. A full channel drops frames, counted in [`LiveStats::queue_drops`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;
use std::time::Duration;

use mamori_models::Timestamp;

use super::{LinkType, RawPacket};

/// How the kernel-side filter is chosen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CaptureFilter {
    /// Every IPv4/IPv6 frame (VLAN-tagged ones included): flows of every conversation.
    AllIp,
    /// Only the given TCP and UDP ports (either direction), plus IPv4 fragments.
    Ports { tcp: Vec<u16>, udp: Vec<u16> },
}

/// Settings of a live capture.
#[derive(Clone, Debug)]
pub struct LiveConfig {
    pub interfaces: Vec<String>,
    pub promiscuous: bool,
    pub filter: CaptureFilter,
    /// Bytes kept of each frame.
    pub snap_len: u32,
    /// Ring memory per interface (a power of two number of 256 KiB blocks is used).
    pub ring_bytes: usize,
    /// Frames queued between the readers and the pipeline.
    pub queue_frames: usize,
}

impl Default for LiveConfig {
    fn default() -> Self {
        LiveConfig {
            interfaces: Vec::new(),
            promiscuous: true,
            filter: CaptureFilter::AllIp,
            snap_len: 65_535,
            ring_bytes: 4 * 1024 * 1024,
            queue_frames: 8192,
        }
    }
}

/// Why a capture could not start.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error("interface {interface}: {source}")]
    Open {
        interface: String,
        #[source]
        source: netring::Error,
    },
    #[error("capture filter: {0}")]
    Filter(String),
    #[error("no interface to capture on")]
    NoInterface,
}

/// Counters of a live capture, shared with the reader threads.
#[derive(Debug, Default)]
pub struct LiveStats {
    /// Frames the readers took from the rings.
    pub frames: AtomicU64,
    /// Frames dropped because the pipeline fell behind (queue full).
    pub queue_drops: AtomicU64,
    /// Frames the kernel saw and kept (its `tp_packets`), summed over interfaces.
    pub kernel_packets: AtomicU64,
    /// Frames the kernel dropped because the ring was full (its `tp_drops`).
    pub kernel_drops: AtomicU64,
}

/// What [`LiveCapture::run`] hands to its caller.
#[derive(Debug)]
pub enum LiveInput<'a> {
    Frame(&'a RawPacket<'a>),
    /// No frame for a while.
    Tick,
}

/// One captured frame, owned (it left the ring).
#[derive(Debug)]
struct OwnedFrame {
    ts: Timestamp,
    orig_len: u32,
    data: Vec<u8>,
}

/// A running live capture.
#[derive(Debug)]
pub struct LiveCapture {
    rx: Receiver<OwnedFrame>,
    stop: Arc<AtomicBool>,
    readers: Vec<JoinHandle<()>>,
    stats: Arc<LiveStats>,
}

const BLOCK_BYTES: usize = 256 * 1024;

fn build_filter(filter: &CaptureFilter) -> Result<Option<netring::BpfFilter>, LiveError> {
    let built = match filter {
        CaptureFilter::AllIp => netring::BpfFilter::builder()
            .ipv4()
            .or(|b| b.ipv6())
            .or(|b| b.vlan())
            .build(),
        CaptureFilter::Ports { tcp, udp } => {
            let mut b = netring::BpfFilter::builder()
                .tcp()
                .ports(tcp.iter().copied());
            if !udp.is_empty() {
                let udp = udp.clone();
                b = b.or(move |b| b.udp().ports(udp));
            }
            // VLAN-tagged traffic is kept whole: the builder cannot look inside the tag.
            b.or(|b| b.vlan()).build()
        }
    };
    built
        .map(Some)
        .map_err(|e| LiveError::Filter(e.to_string()))
}

impl LiveCapture {
    /// Opens every interface (this needs `CAP_NET_RAW`) and starts the readers. Call
    /// [`drop_privileges`] after this returns.
    pub fn open(config: &LiveConfig) -> Result<Self, LiveError> {
        if config.interfaces.is_empty() {
            return Err(LiveError::NoInterface);
        }
        let filter = build_filter(&config.filter)?;
        let blocks = (config.ring_bytes / BLOCK_BYTES).max(2);
        let mut captures = Vec::new();
        for name in &config.interfaces {
            let mut b = netring::Capture::builder()
                .interface(name)
                .promiscuous(config.promiscuous)
                .snap_len(config.snap_len)
                .block_size(BLOCK_BYTES)
                .block_count(blocks)
                .frame_size(2048)
                .block_timeout_ms(100);
            if let Some(f) = filter.clone() {
                b = b.bpf_filter(f);
            }
            let cap = b.build().map_err(|source| LiveError::Open {
                interface: name.clone(),
                source,
            })?;
            captures.push((name.clone(), cap));
        }
        let (tx, rx) = sync_channel(config.queue_frames.max(1));
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(LiveStats::default());
        let readers = captures
            .into_iter()
            .map(|(name, cap)| {
                let (tx, stop, stats) = (tx.clone(), Arc::clone(&stop), Arc::clone(&stats));
                std::thread::Builder::new()
                    .name(format!("capture-{name}"))
                    .spawn(move || read_loop(name, cap, tx, &stop, &stats))
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| LiveError::Filter(format!("cannot start a reader thread: {e}")))?;
        Ok(LiveCapture {
            rx,
            stop,
            readers,
            stats,
        })
    }

    pub fn stats(&self) -> Arc<LiveStats> {
        Arc::clone(&self.stats)
    }

    /// Delivers frames until `stop` is set (or every reader ended), and a
    /// [`LiveInput::Tick`] whenever `tick` passes without one, so the caller can advance its
    /// clock on a quiet link.
    pub fn run(&mut self, stop: &AtomicBool, tick: Duration, mut on: impl FnMut(LiveInput<'_>)) {
        let deliver = |f: &OwnedFrame, on: &mut dyn FnMut(LiveInput<'_>)| {
            on(LiveInput::Frame(&RawPacket {
                ts: f.ts,
                link_type: LinkType::ETHERNET,
                data: &f.data,
                orig_len: f.orig_len,
            }));
        };
        while !stop.load(Ordering::Relaxed) {
            match self.rx.recv_timeout(tick) {
                Ok(f) => deliver(&f, &mut on),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => on(LiveInput::Tick),
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        self.shutdown();
        // What the readers queued before they stopped is still delivered.
        while let Ok(f) = self.rx.try_recv() {
            deliver(&f, &mut on);
        }
    }

    /// Stops the readers and waits for them (each wakes within its poll timeout).
    pub fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
    }
}

impl Drop for LiveCapture {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn read_loop(
    name: String,
    mut cap: netring::Capture,
    tx: SyncSender<OwnedFrame>,
    stop: &AtomicBool,
    stats: &LiveStats,
) {
    let mut warned = false;
    let mut last_kernel = (0u64, 0u64);
    while !stop.load(Ordering::Relaxed) {
        match cap.next_batch_blocking(Duration::from_millis(100)) {
            Ok(Some(batch)) => {
                for pkt in batch.iter() {
                    stats.frames.fetch_add(1, Ordering::Relaxed);
                    let ts = pkt.timestamp();
                    let frame = OwnedFrame {
                        ts: Timestamp::from_secs_nanos(i64::from(ts.sec), ts.nsec),
                        orig_len: u32::try_from(pkt.original_len()).unwrap_or(u32::MAX),
                        data: pkt.data().to_vec(),
                    };
                    match tx.try_send(frame) {
                        Ok(()) => {}
                        Err(TrySendError::Full(_)) => {
                            stats.queue_drops.fetch_add(1, Ordering::Relaxed);
                            if !std::mem::replace(&mut warned, true) {
                                tracing::warn!(interface = %name, "the pipeline falls behind the capture: frames are dropped (counted)");
                            }
                        }
                        Err(TrySendError::Disconnected(_)) => return,
                    }
                }
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(interface = %name, error = %e, "capture failed");
                return;
            }
        }
        if let Ok(s) = cap.cumulative_stats() {
            let now = (u64::from(s.packets), u64::from(s.drops));
            stats
                .kernel_packets
                .fetch_add(now.0.saturating_sub(last_kernel.0), Ordering::Relaxed);
            stats
                .kernel_drops
                .fetch_add(now.1.saturating_sub(last_kernel.1), Ordering::Relaxed);
            last_kernel = now;
        }
    }
}

/// Switches to an unprivileged user (and its primary group) once the capture sockets are
/// open; the open sockets keep working, and no further capability remains.
pub fn drop_privileges(user: &str) -> Result<(), String> {
    use nix::unistd::{Gid, User, setgid, setgroups, setuid};
    let entry = User::from_name(user)
        .map_err(|e| format!("looking up user {user:?}: {e}"))?
        .ok_or_else(|| format!("no such user: {user:?}"))?;
    setgroups(&[Gid::from_raw(entry.gid.as_raw())]).map_err(|e| format!("setgroups: {e}"))?;
    setgid(entry.gid).map_err(|e| format!("setgid({}): {e}", entry.gid))?;
    setuid(entry.uid).map_err(|e| format!("setuid({}): {e}", entry.uid))?;
    if nix::unistd::geteuid().is_root() {
        return Err("still root after setuid".into());
    }
    Ok(())
}
