//! Replay: capture files through the pipeline, in the order given, as one continuous capture
//! (a connection may span rotated files).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use mamori_models::Event;

use crate::capture::{CaptureError, FileSummary, read_capture_file_with_summary};
use crate::pipeline::{Counters, EventSink, Pipeline, PipelineConfig};

/// What a replay did.
#[derive(Debug)]
pub struct ReplayReport {
    pub counters: Counters,
    /// What was read from each file, in the order given (corrupt records skipped included).
    pub files: Vec<FileSummary>,
    /// Files that could not be read to their end (everything before the fault was processed).
    pub errors: Vec<CaptureError>,
}

impl ReplayReport {
    /// The files' summaries added up.
    pub fn file_totals(&self) -> FileSummary {
        let mut total = FileSummary::default();
        for file in &self.files {
            total.add(file);
        }
        total
    }
}

/// Replays `paths` into `sink`. Corrupt records inside a file are skipped and counted in
/// [`ReplayReport::files`]; a file that cannot be opened, ends in a truncated record or holds
/// nothing readable is reported in [`ReplayReport::errors`] and the replay goes on with the
/// next file.
pub fn replay_files(
    paths: &[PathBuf],
    config: PipelineConfig,
    sink: &mut dyn EventSink,
) -> ReplayReport {
    replay_files_paced(paths, config, None, sink)
}

/// Like [`replay_files`], and with `speed` set, at the recorded pace: frame gaps are slept,
/// divided by `speed` (2.0 replays twice as fast). For drills and demos.
pub fn replay_files_paced(
    paths: &[PathBuf],
    config: PipelineConfig,
    speed: Option<f64>,
    sink: &mut dyn EventSink,
) -> ReplayReport {
    let mut pipeline = Pipeline::new(config);
    let (files, errors) = replay_into(&mut pipeline, paths, speed, None, sink);
    pipeline.finish(sink);
    ReplayReport {
        counters: pipeline.counters(),
        files,
        errors,
    }
}

/// Feeds `paths` into a running `pipeline` (the daemon's, which goes on with live capture
/// after), paced like [`replay_files_paced`]; stops between frames once `stop` is set. Ends no
/// flow: the caller's pipeline does that. Returns what was read from each file and the files
/// that could not be read to their end.
pub fn replay_into(
    pipeline: &mut Pipeline,
    paths: &[PathBuf],
    speed: Option<f64>,
    stop: Option<&std::sync::atomic::AtomicBool>,
    sink: &mut dyn EventSink,
) -> (Vec<FileSummary>, Vec<CaptureError>) {
    let mut errors = Vec::new();
    let mut files = Vec::with_capacity(paths.len());
    let mut clock: Option<(mamori_models::Timestamp, Instant)> = None;
    let speed = speed.filter(|s| s.is_finite() && *s > 0.0);
    let stopped = || stop.is_some_and(|s| s.load(std::sync::atomic::Ordering::Relaxed));
    for path in paths {
        if stopped() {
            break;
        }
        let (summary, result) = read_capture_file_with_summary(path, |pkt| {
            if stopped() {
                return;
            }
            if let Some(speed) = speed {
                let (first, started) = *clock.get_or_insert((pkt.ts, Instant::now()));
                let offset_us = pkt.ts.as_micros().saturating_sub(first.as_micros()).max(0);
                let due = started + Duration::from_secs_f64(offset_us as f64 / 1e6 / speed);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
            }
            pipeline.process(pkt, sink)
        });
        files.push(summary);
        if let Err(e) = result {
            tracing::error!(error = %e, "capture file not read to its end");
            errors.push(e);
        }
    }
    (files, errors)
}

/// Replays `paths` and collects the events (for tests and small captures).
pub fn replay_to_vec(paths: &[PathBuf], config: PipelineConfig) -> (Vec<Event>, ReplayReport) {
    let mut events = Vec::new();
    let report = replay_files(paths, config, &mut |e| events.push(e));
    (events, report)
}
