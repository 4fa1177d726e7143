//! Baseline-learned detectors.
