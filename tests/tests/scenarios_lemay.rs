//! The labelled Lemay & Fernandez (CSET 2016) captures: for each capture, learn from the frames
//! labelled normal in the *other* captures of the same testbed, detect on the whole capture,
//! and compare the alerts with the labelled malicious time spans. See the corpus MANIFEST for
//! provenance. Skips (with the reason) when the corpus is absent, unless
//! `MAMORI_REQUIRE_CORPUS=1`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::path::{Path, PathBuf};

use mamori_agent::capture::read_capture_file;
use mamori_agent::pipeline::PipelineConfig;
use mamori_agent::replay::replay_to_vec;
use mamori_models::detect::{Alert, DetectConfig, Detector, Learner};
use mamori_models::{Event, Timestamp};
use mamori_tests::pcapgen::PcapWriter;

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/corpus/modbus");
/// Two malicious frames less than this apart belong to the same attack episode. The labels
/// are per frame, and benign frames interleave with an attack's own (the HMI keeps polling
/// while the attacker works), so runs of consecutive malicious frames split one attack into
/// hundreds of pieces; an alert raised between two of its frames 0.1 s apart is inside the
/// attack, not a false alert. One second is ten times the testbed's polling step.
const EPISODE_GAP_MICROS: i64 = 1_000_000;

const CAPTURES: [&str; 3] = [
    "characterization_modbus_6RTU_with_operate",
    "CnC_uploading_exe_modbus_6RTU_with_operate",
    "moving_two_files_modbus_6RTU",
];

struct Capture {
    name: &'static str,
    pcap: PathBuf,
    /// Only the frames labelled normal.
    normal_pcap: PathBuf,
    /// Attack episodes: malicious frames closer than [`EPISODE_GAP_MICROS`] to each other
    /// merged into one (first, last) time span.
    spans: Vec<(Timestamp, Timestamp)>,
    /// Runs of consecutive malicious frames before merging (for the report).
    runs: usize,
}

fn dir() -> Option<PathBuf> {
    let d = Path::new(CORPUS).join("lemay-cset16");
    if d.join(CAPTURES[0]).is_dir() {
        return Some(d);
    }
    if std::env::var("MAMORI_REQUIRE_CORPUS").as_deref() == Ok("1") {
        panic!("corpus required but {} is absent", d.display());
    }
    println!("skipping: the Lemay captures are absent ({})", d.display());
    None
}

fn load(d: &Path, name: &'static str, tmp: &Path) -> Capture {
    let pcap = d.join(name).join(format!("{name}.pcap"));
    let labels_text =
        std::fs::read_to_string(d.join(name).join(format!("{name}_labeled.csv"))).unwrap();
    let mut labels = std::collections::BTreeMap::new();
    for line in labels_text.lines().filter(|l| !l.trim().is_empty()) {
        let (frame, label) = line.trim().split_once(';').unwrap();
        labels.insert(frame.parse::<usize>().unwrap(), label == "1");
    }
    let mut writer: Option<PcapWriter> = None;
    let mut spans: Vec<(Timestamp, Timestamp)> = Vec::new();
    let mut frame = 0usize;
    let mut in_span = false;
    let mut runs = 0usize;
    read_capture_file(&pcap, |pkt| {
        frame += 1;
        let w = writer.get_or_insert_with(|| PcapWriter::new(pkt.link_type.0 as u32));
        let malicious = labels.get(&frame).copied().unwrap_or(false);
        if malicious {
            if !in_span {
                runs += 1;
            }
            match spans.last_mut() {
                Some(last) if pkt.ts.as_micros() - last.1.as_micros() < EPISODE_GAP_MICROS => {
                    last.1 = pkt.ts
                }
                _ => spans.push((pkt.ts, pkt.ts)),
            }
        } else {
            w.packet(pkt.ts.as_micros(), pkt.data);
        }
        in_span = malicious;
    })
    .unwrap();
    assert_eq!(frame, labels.len(), "{name}: one label per frame");
    let normal_pcap = tmp.join(format!("{name}.normal.pcap"));
    std::fs::write(&normal_pcap, writer.unwrap().into_bytes()).unwrap();
    Capture {
        name,
        pcap,
        normal_pcap,
        spans,
        runs,
    }
}

fn events(paths: &[PathBuf]) -> Vec<Event> {
    let (mut ev, report) = replay_to_vec(paths, PipelineConfig::default());
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    ev.sort_by_key(|e| e.ts());
    ev
}

#[test]
fn lemay_attacks_are_caught_from_baselines_of_the_other_captures() {
    let Some(d) = dir() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let caps: Vec<Capture> = CAPTURES.iter().map(|n| load(&d, n, tmp.path())).collect();

    println!(
        "| capture | malicious runs / episodes | caught | time to first alert | alerts in episodes | false alerts outside |"
    );
    println!("|---|---|---|---|---|---|");
    let mut failures = Vec::new();
    for target in &caps {
        let learn_paths: Vec<PathBuf> = caps
            .iter()
            .filter(|c| c.name != target.name)
            .map(|c| c.normal_pcap.clone())
            .collect();
        let mut learner = Learner::new(DetectConfig::default());
        for e in &events(&learn_paths) {
            learner.observe(e);
        }
        let mut detector = Detector::new(learner.finish(), DetectConfig::default()).unwrap();
        for e in &events(std::slice::from_ref(&target.pcap)) {
            detector.observe(e);
        }
        let (alerts, _) = detector.finish();
        let inside = |a: &Alert| target.spans.iter().any(|&(s, e)| s <= a.ts && a.ts <= e);
        let hits: Vec<&Alert> = alerts.iter().filter(|a| inside(a)).collect();
        let false_alerts: Vec<&Alert> = alerts.iter().filter(|a| !inside(a)).collect();
        let first_malicious = target.spans.first().map(|s| s.0).unwrap();
        let delay = hits
            .first()
            .map(|a| {
                format!(
                    "{:.3} s",
                    (a.ts.as_micros() - first_malicious.as_micros()) as f64 / 1e6
                )
            })
            .unwrap_or_else(|| "-".into());
        println!(
            "| {} | {} / {} | {} | {delay} | {} | {} |",
            target.name,
            target.runs,
            target.spans.len(),
            if hits.is_empty() { "NO" } else { "yes" },
            hits.len(),
            false_alerts.len()
        );
        for a in &hits {
            println!(
                "    hit   {} {} [{}] {}",
                a.ts,
                a.kind,
                a.severity.as_str(),
                a.summary
            );
        }
        for a in &false_alerts {
            println!(
                "    false {} {} [{}] {}",
                a.ts,
                a.kind,
                a.severity.as_str(),
                a.summary
            );
        }
        if hits.is_empty() {
            failures.push(format!("{}: attack not caught", target.name));
        }
        if !false_alerts.is_empty() {
            failures.push(format!(
                "{}: {} false alerts",
                target.name,
                false_alerts.len()
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:?}");
}
