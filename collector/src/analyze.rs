//! `mamori-collector analyze`: offline learning and detection over event files (JSON Lines
//! from `mamori-agent replay`). Learns a baseline (or loads one), detects, writes alerts as
//! JSON Lines to stdout and a short human summary to stderr.

use std::fs;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use mamori_models::Event;
use mamori_models::detect::{Baseline, DetectConfig, Learner, Severity};

use crate::AnalyzeArgs;

/// Longest event line accepted; longer lines are skipped and counted.
const MAX_LINE_BYTES: usize = 1 << 20;

/// Events read from a set of inputs, in timestamp order.
#[derive(Debug, Default)]
pub(crate) struct Loaded {
    pub events: Vec<Event>,
    /// Lines that were not events (other record types, malformed or too long).
    pub skipped: u64,
}

fn read_events_from(reader: impl BufRead, name: &str, out: &mut Loaded) -> anyhow::Result<()> {
    for (n, line) in reader.lines().enumerate() {
        let line = line.with_context(|| format!("reading {name} line {}", n + 1))?;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if line.len() > MAX_LINE_BYTES {
            out.skipped += 1;
            continue;
        }
        match serde_json::from_str::<Event>(line) {
            Ok(e) => out.events.push(e),
            Err(_) => out.skipped += 1,
        }
    }
    Ok(())
}

/// Reads every input (`-` is stdin, read at most once) and sorts the events by time. The
/// sort is stable, so equal timestamps keep file order and the result is deterministic.
pub(crate) fn load_events(inputs: &[PathBuf]) -> anyhow::Result<Loaded> {
    let mut out = Loaded::default();
    let mut stdin_used = false;
    for path in inputs {
        if path == Path::new("-") {
            if stdin_used {
                bail!("stdin (`-`) given more than once");
            }
            stdin_used = true;
            read_events_from(io::stdin().lock(), "stdin", &mut out)?;
        } else {
            let file = fs::File::open(path)
                .with_context(|| format!("opening events {}", path.display()))?;
            read_events_from(BufReader::new(file), &path.display().to_string(), &mut out)?;
        }
    }
    out.events.sort_by_key(|e| e.ts());
    Ok(out)
}

pub(crate) fn run(args: &AnalyzeArgs) -> anyhow::Result<()> {
    let config = DetectConfig {
        min_severity: args.min_severity.into(),
        ..DetectConfig::default()
    };
    config
        .validate()
        .context("checking the detection configuration")?;
    let mut err = io::stderr().lock();

    // The learning events, when given, are kept for the inventory (devices' identities).
    let mut learning: Vec<Event> = Vec::new();
    let baseline = match (&args.baseline, args.learn.is_empty()) {
        (Some(_), false) => bail!("give either --baseline or --learn, not both"),
        (None, true) => bail!("give --learn EVENTS... or --baseline FILE"),
        (Some(path), true) => {
            let text = fs::read_to_string(path)
                .with_context(|| format!("reading baseline {}", path.display()))?;
            Baseline::from_json(&text)
                .with_context(|| format!("loading baseline {}", path.display()))?
        }
        (None, false) => {
            let loaded = load_events(&args.learn).context("reading the learning events")?;
            let mut learner = Learner::new(config.clone());
            if let Some(site) = &args.site {
                learner = learner.with_site(site.clone());
            }
            for e in &loaded.events {
                learner.observe(e);
            }
            let b = learner.finish();
            writeln!(
                err,
                "learned from {} events ({} lines skipped): {} hosts, {} paths, {} Modbus functions, {} channels ({} periodic), {} registers",
                loaded.events.len(),
                loaded.skipped,
                b.allowlist.hosts.len(),
                b.allowlist.paths.len(),
                b.allowlist.functions.len(),
                b.cycles.channels.len(),
                b.cycles.channels.values().filter(|c| c.period_us.is_some()).count(),
                b.values.registers.len(),
            )
            .context("writing to stderr")?;
            writeln!(
                err,
                "traffic windows: {} channels/hosts modelled, {} with too few windows; syslog: {} templates over {} hosts",
                b.windows.models.len(),
                b.windows.skipped.len(),
                b.syslog.rates.len(),
                b.syslog.hosts.len(),
            )
            .context("writing to stderr")?;
            if b.overflow.total() > 0 {
                writeln!(err, "warning: state limits refused {:?}", b.overflow)
                    .context("writing to stderr")?;
            }
            learning = loaded.events;
            b
        }
    };
    if let Some(path) = &args.baseline_out {
        let json = baseline.to_json().context("serialising the baseline")?;
        fs::write(path, json + "\n")
            .with_context(|| format!("writing baseline {}", path.display()))?;
    }
    if args.detect.is_empty() {
        return Ok(());
    }

    let loaded = load_events(&args.detect).context("reading the detection events")?;
    let (alerts, summary) =
        mamori_collector::offline::detect(baseline, config, &learning, &loaded.events)
            .context("starting detection")?;
    let mut out = BufWriter::new(io::stdout().lock());
    for a in &alerts {
        serde_json::to_writer(&mut out, a).context("writing an alert")?;
        out.write_all(b"\n").context("writing to stdout")?;
    }
    out.flush().context("writing to stdout")?;

    let sev: Vec<String> = summary
        .by_severity
        .iter()
        .rev()
        .map(|(s, n)| format!("{n} {}", s.as_str()))
        .collect();
    writeln!(
        err,
        "detected over {} events ({} lines skipped): {} alerts{}{}",
        summary.events,
        loaded.skipped,
        alerts.len(),
        if sev.is_empty() {
            String::new()
        } else {
            format!(" ({})", sev.join(", "))
        },
        if summary.below_min_severity > 0 {
            format!(
                "; {} below the minimum severity not shown",
                summary.below_min_severity
            )
        } else {
            String::new()
        },
    )
    .context("writing to stderr")?;
    for note in &summary.notes {
        writeln!(err, "note: {note}").context("writing to stderr")?;
    }
    for a in alerts
        .iter()
        .filter(|a| a.severity >= Severity::High)
        .take(10)
    {
        writeln!(err, "  [{}] {} {}", a.severity.as_str(), a.ts, a.summary)
            .context("writing to stderr")?;
    }
    Ok(())
}
