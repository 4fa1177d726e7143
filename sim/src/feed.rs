//! The agent's half of a demo or drill, in-process: tapped frames from a [`ChannelSink`]
//! through the agent's [`Pipeline`] into a [`Shipper`], which sends them over mutual TLS to a
//! collector exactly as a deployed agent would.
//!
//! [`ChannelSink`]: crate::sink::ChannelSink

use std::time::Duration;

use mamori_agent::capture::{LinkType, RawPacket};
use mamori_agent::pipeline::{Counters, Pipeline, PipelineConfig};
use mamori_agent::ship::{ShipStatsSnapshot, Shipper, ShipperConfig};
use mamori_models::{Event, Timestamp};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::sink::TappedFrame;

/// How often the pipeline's clock moves without frames (overdue requests, idle flows).
const TICK: Duration = Duration::from_millis(250);

/// What the feed did, at its end.
#[derive(Debug)]
pub struct FeedReport {
    pub counters: Counters,
    pub events_total: u64,
    /// The shipper's counters after its final flush, or why it did not stop cleanly.
    pub shipped: Result<ShipStatsSnapshot, String>,
}

/// The running feed.
#[derive(Debug)]
pub struct Feed {
    stop: watch::Sender<bool>,
    task: JoinHandle<FeedReport>,
}

impl Feed {
    /// Starts the shipper with `config` and a task draining `frames` into it.
    pub fn start(
        frames: mpsc::Receiver<TappedFrame>,
        config: &ShipperConfig,
        pipeline: PipelineConfig,
        drain: Duration,
    ) -> Result<Feed, mamori_agent::ship::ShipError> {
        let shipper = Shipper::start(config)?;
        let (stop, rx) = watch::channel(false);
        let task = tokio::spawn(run(frames, shipper, Pipeline::new(pipeline), drain, rx));
        Ok(Feed { stop, task })
    }

    /// Takes the frames still queued, ends every flow, flushes the shipper (waiting up to its
    /// drain time for the collector's acknowledgements) and reports. Stop the plant first.
    pub async fn finish(self) -> FeedReport {
        let _ = self.stop.send(true);
        match self.task.await {
            Ok(report) => report,
            Err(e) => FeedReport {
                counters: Counters::default(),
                events_total: 0,
                shipped: Err(format!("feed task: {e}")),
            },
        }
    }
}

async fn ship(shipper: &Shipper, events: &mut Vec<Event>, total: &mut u64) {
    for e in events.drain(..) {
        *total += 1;
        if let Err(err) = shipper.push(&e).await {
            tracing::error!(error = %err, "event not spooled");
        }
    }
}

fn wall_now() -> Timestamp {
    Timestamp::from_system_time(std::time::SystemTime::now())
}

async fn run(
    mut frames: mpsc::Receiver<TappedFrame>,
    shipper: Shipper,
    mut pipeline: Pipeline,
    drain: Duration,
    mut stop: watch::Receiver<bool>,
) -> FeedReport {
    let mut events = Vec::new();
    let mut total = 0u64;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let process = |pipeline: &mut Pipeline, events: &mut Vec<Event>, (ts, frame): TappedFrame| {
        let len = u32::try_from(frame.len()).unwrap_or(u32::MAX);
        let pkt = RawPacket {
            ts,
            link_type: LinkType::ETHERNET,
            data: &frame,
            orig_len: len,
        };
        pipeline.process(&pkt, &mut |e| events.push(e));
    };
    loop {
        tokio::select! {
            frame = frames.recv() => match frame {
                Some(f) => process(&mut pipeline, &mut events, f),
                None => break,
            },
            _ = tick.tick() => pipeline.advance_to(wall_now(), &mut |e| events.push(e)),
            _ = stop.wait_for(|s| *s) => {
                while let Ok(f) = frames.try_recv() {
                    process(&mut pipeline, &mut events, f);
                }
                break;
            }
        }
        ship(&shipper, &mut events, &mut total).await;
    }
    pipeline.finish(&mut |e| events.push(e));
    ship(&shipper, &mut events, &mut total).await;
    let shipped = shipper.shutdown(drain).await.map_err(|e| e.to_string());
    FeedReport {
        counters: pipeline.counters(),
        events_total: total,
        shipped,
    }
}
