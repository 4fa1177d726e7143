//! Shared by the template-miner evaluations (`loghub.rs`, `miner_cv.rs`): the Loghub-2k loader
//! and the GA / PA scoring.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    dead_code
)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use mamori_models::templates::{MinerConfig, TemplateId, TemplateMiner, Tuning};

/// The public Loghub-2k corpus, beside the repository.
pub const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/corpus/loghub");

/// Device syslog messages with their syslog-ng pattern-db rule (a template ground truth from
/// outside Loghub).
pub const PATTERNDB: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/corpus/syslog/devices/syslogng_patterndb_examples.jsonl"
);

/// The ten public Loghub-2k sources.
pub const SOURCES: [&str; 10] = [
    "Android",
    "BGL",
    "HDFS",
    "HPC",
    "Hadoop",
    "HealthApp",
    "Proxifier",
    "Spark",
    "Thunderbird",
    "Zookeeper",
];

/// The corpus folder, or `None` (with the reason printed) when it is absent;
/// `MAMORI_REQUIRE_CORPUS=1` (set by `.ci/run`) makes its absence a failure.
pub fn corpus() -> Option<PathBuf> {
    let dir = PathBuf::from(CORPUS);
    if dir.join("MANIFEST.md").exists() {
        return Some(dir);
    }
    if std::env::var("MAMORI_REQUIRE_CORPUS").as_deref() == Ok("1") {
        panic!("MAMORI_REQUIRE_CORPUS=1 but {} is absent", dir.display());
    }
    println!("skipped: Loghub corpus not found at {}", dir.display());
    None
}

/// Minimal RFC 4180 reader: quoted fields, doubled quotes, CRLF or LF, newlines inside quotes.
pub fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut in_quotes = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if in_quotes {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    field.push('"');
                    chars.next();
                } else {
                    in_quotes = false;
                }
            } else {
                field.push(c);
            }
            continue;
        }
        match c {
            '"' => in_quotes = true,
            ',' => row.push(std::mem::take(&mut field)),
            '\r' => {}
            '\n' => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            _ => field.push(c),
        }
    }
    if !field.is_empty() || !row.is_empty() {
        row.push(field);
        rows.push(row);
    }
    rows
}

/// One labelled message.
pub struct Line {
    pub content: String,
    /// Ground-truth group.
    pub event: String,
    /// Ground-truth template text.
    pub template: String,
}

/// A Loghub-2k source with the corrected ground truth of Khan et al. (ICSE 2022).
pub fn load(dir: &Path, ds: &str) -> Vec<Line> {
    let path = dir
        .join(ds)
        .join("corrected")
        .join(format!("{ds}_2k.log_structured_corrected.csv"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let rows = parse_csv(&text);
    let header = &rows[0];
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let (c, e, t) = (col("Content"), col("EventId"), col("EventTemplate"));
    rows[1..]
        .iter()
        .filter(|r| r.len() == header.len())
        .map(|r| Line {
            content: r[c].clone(),
            event: r[e].clone(),
            template: r[t].clone(),
        })
        .collect()
}

/// The syslog-ng pattern-db examples grouped by program (the syslog detector runs one miner per
/// application): `(program, lines)`, the rule id as the ground-truth group. `None` when absent.
pub fn load_patterndb() -> Option<Vec<(String, Vec<Line>)>> {
    let text = std::fs::read_to_string(PATTERNDB).ok()?;
    let mut by_program: BTreeMap<String, Vec<Line>> = BTreeMap::new();
    for l in text.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        let program = v["program"].as_str().unwrap_or("-").to_owned();
        by_program.entry(program).or_default().push(Line {
            content: v["message"].as_str().unwrap_or("").to_owned(),
            event: v["expect"]["rule_id"].as_str().unwrap_or("").to_owned(),
            template: String::new(),
        });
    }
    Some(by_program.into_iter().collect())
}

/// The usual consecutive-variable folding of the Loghub-2.0 evaluation
/// (`correct_single_template`: `<*><*>`, `<*>.<*>`, `<*>:<*>`, `#<*>#` become `<*>`), applied to
/// both sides, after collapsing whitespace.
pub fn normalise(template: &str) -> String {
    let mut s = template.split_whitespace().collect::<Vec<_>>().join(" ");
    loop {
        let before = s.len();
        for pat in ["<*><*>", "<*>.<*>", "<*>:<*>", "#<*>#"] {
            s = s.replace(pat, "<*>");
        }
        if s.len() == before {
            return s;
        }
    }
}

/// Accuracy of one source.
pub struct Score {
    /// Grouping accuracy: share of lines whose predicted group is exactly their true group.
    pub ga: f64,
    /// Parsing accuracy: share of lines whose final template text equals the true one.
    pub pa: f64,
    pub templates: usize,
}

/// Mines `lines` in order with one miner: each line's id as returned by `add`, passed through
/// [`TemplateMiner::resolve`] at the end (merges fold earlier ids into later templates).
fn mine(lines: &[Line], tuning: Tuning) -> (TemplateMiner, Vec<TemplateId>) {
    let mut miner = TemplateMiner::with_tuning(MinerConfig::default(), tuning).unwrap();
    let raw: Vec<TemplateId> = lines.iter().map(|l| miner.add(&l.content).id).collect();
    // Default bounds never evict on 2,000 lines, so every id resolves.
    let ids = raw.iter().map(|id| miner.resolve(*id).unwrap()).collect();
    (miner, ids)
}

/// Grouping accuracy alone, for the cross-validation's many runs. A predicted cluster is either
/// exactly one ground-truth group (all its lines correct) or no group at all (none correct: a
/// line whose true group equals the cluster would share the group of every other line in it),
/// so one comparison per cluster decides.
pub fn grouping_accuracy(lines: &[Line], tuning: Tuning) -> f64 {
    let (_, ids) = mine(lines, tuning);
    let mut pred: BTreeMap<TemplateId, BTreeSet<usize>> = BTreeMap::new();
    let mut truth: BTreeMap<&str, BTreeSet<usize>> = BTreeMap::new();
    for (i, (id, l)) in ids.iter().zip(lines).enumerate() {
        pred.entry(*id).or_default().insert(i);
        truth.entry(l.event.as_str()).or_default().insert(i);
    }
    let ok: usize = pred
        .values()
        .filter(|set| {
            let first = *set.iter().next().unwrap();
            truth[lines[first].event.as_str()] == **set
        })
        .map(BTreeSet::len)
        .sum();
    ok as f64 / lines.len().max(1) as f64
}

/// Mines `lines` in order with one miner and scores the final grouping (ids resolved as in
/// [`grouping_accuracy`]) and template texts. `debug` prints the wrongly grouped ground-truth
/// templates.
pub fn score(ds: &str, lines: &[Line], tuning: Tuning, debug: bool) -> Score {
    let (miner, ids) = mine(lines, tuning);
    let final_text: BTreeMap<TemplateId, String> = miner
        .templates()
        .map(|t| (t.id, normalise(&t.template)))
        .collect();

    let mut pred: BTreeMap<TemplateId, BTreeSet<usize>> = BTreeMap::new();
    let mut truth: BTreeMap<&str, BTreeSet<usize>> = BTreeMap::new();
    for (i, (id, l)) in ids.iter().zip(lines).enumerate() {
        pred.entry(*id).or_default().insert(i);
        truth.entry(l.event.as_str()).or_default().insert(i);
    }
    let mut ga_ok = 0usize;
    let mut pa_ok = 0usize;
    for (id, l) in ids.iter().zip(lines) {
        if pred[id] == truth[l.event.as_str()] {
            ga_ok += 1;
        }
        if final_text.get(id).map(String::as_str) == Some(normalise(&l.template).as_str()) {
            pa_ok += 1;
        }
    }
    if debug {
        print_errors(ds, lines, &ids, &pred, &truth, &final_text);
    }
    let n = lines.len().max(1) as f64;
    Score {
        ga: ga_ok as f64 / n,
        pa: pa_ok as f64 / n,
        templates: pred.len(),
    }
}

fn print_errors(
    ds: &str,
    lines: &[Line],
    ids: &[TemplateId],
    pred: &BTreeMap<TemplateId, BTreeSet<usize>>,
    truth: &BTreeMap<&str, BTreeSet<usize>>,
    final_text: &BTreeMap<TemplateId, String>,
) {
    let mut shown = BTreeSet::new();
    println!("--- {ds}: wrongly parsed templates (predicted | truth)");
    for (id, l) in ids.iter().zip(lines) {
        let p = final_text.get(id).cloned().unwrap_or_default();
        let t = normalise(&l.template);
        if p != t && shown.insert(t.clone()) {
            println!("   {p:?}\n   {t:?}");
        }
    }
    println!("--- {ds}: wrongly grouped ground-truth templates");
    for (ev, set) in truth {
        let first = *set.iter().next().unwrap();
        let mut clusters: BTreeMap<TemplateId, usize> = BTreeMap::new();
        for &i in set {
            *clusters.entry(ids[i]).or_default() += 1;
        }
        if clusters.len() == 1 && pred[&ids[first]] == *set {
            continue;
        }
        println!("GT {ev} ({} lines): {}", set.len(), lines[first].template);
        for (id, n) in &clusters {
            println!(
                "   pred {} ({n} of {}): {}   e.g. {:?}",
                id.0,
                pred[id].len(),
                final_text.get(id).map(String::as_str).unwrap_or("?"),
                lines[*pred[id].iter().next().unwrap()].content
            );
        }
    }
}
