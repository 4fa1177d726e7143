//! Replay: capture files through the pipeline, in the order given, as one continuous capture
//! (a connection may span rotated files).

use std::path::PathBuf;

use mamori_models::Event;

use crate::capture::{CaptureError, read_capture_file};
use crate::pipeline::{Counters, EventSink, Pipeline, PipelineConfig};

/// What a replay did.
#[derive(Debug)]
pub struct ReplayReport {
    pub counters: Counters,
    /// Files that could not be read to their end (everything before the fault was processed).
    pub errors: Vec<CaptureError>,
}

/// Replays `paths` into `sink`. A file that cannot be opened or ends in a bad record is
/// reported in [`ReplayReport::errors`] and the replay goes on with the next file.
pub fn replay_files(
    paths: &[PathBuf],
    config: PipelineConfig,
    sink: &mut dyn EventSink,
) -> ReplayReport {
    let mut pipeline = Pipeline::new(config);
    let mut errors = Vec::new();
    for path in paths {
        if let Err(e) = read_capture_file(path, |pkt| pipeline.process(pkt, sink)) {
            tracing::error!(error = %e, "capture file not read to its end");
            errors.push(e);
        }
    }
    pipeline.finish(sink);
    ReplayReport {
        counters: pipeline.counters(),
        errors,
    }
}

/// Replays `paths` and collects the events (for tests and small captures).
pub fn replay_to_vec(paths: &[PathBuf], config: PipelineConfig) -> (Vec<Event>, ReplayReport) {
    let mut events = Vec::new();
    let report = replay_files(paths, config, &mut |e| events.push(e));
    (events, report)
}
