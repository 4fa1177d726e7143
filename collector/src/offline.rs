//! Offline detection, as `mamori-collector analyze` runs it: the models' detectors over the
//! detection events, and beside them the asset inventory that `serve` keeps, so that a
//! device whose identification changed (a firmware change, a swapped device) is found
//! offline as it is online. The evaluation harness calls this too, so that what it scores is
//! what `analyze` writes.

use mamori_models::Event;
use mamori_models::detect::{Alert, Baseline, DetectConfig, DetectError, DetectSummary, Detector};

use crate::inventory::Inventory;

/// Hosts tracked per site by the offline inventory.
const MAX_ASSETS: usize = 65_536;
/// The inventory's site name offline (one capture, one site).
const SITE: &str = "offline";

/// Detects over `detection` with `baseline`; `learning` (the events the baseline was learned
/// from, when at hand) tells the inventory each device's identification beforehand. Alerts
/// are in order of first occurrence, those below `config.min_severity` counted in the
/// summary and left out.
pub fn detect(
    baseline: Baseline,
    config: DetectConfig,
    learning: &[Event],
    detection: &[Event],
) -> Result<(Vec<Alert>, DetectSummary), DetectError> {
    let min = config.min_severity;
    let mut detector = Detector::new(baseline, config)?;
    let mut inventory = Inventory::new(MAX_ASSETS);
    for e in learning {
        // What learning shows is the reference, not a change.
        let _ = inventory.observe(SITE, e);
    }
    let mut found = Vec::new();
    for e in detection {
        detector.observe(e);
        found.extend(inventory.observe(SITE, e));
    }
    let (mut alerts, mut summary) = detector.finish();
    for a in found {
        if a.severity < min {
            summary.below_min_severity += 1;
            continue;
        }
        *summary.by_severity.entry(a.severity).or_default() += 1;
        *summary.by_detector.entry(a.detector).or_default() += 1;
        alerts.push(a);
    }
    // Stable: the detectors' own order stays for equal times.
    alerts.sort_by_key(|a| a.ts);
    Ok((alerts, summary))
}
