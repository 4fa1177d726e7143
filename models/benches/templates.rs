//! Template-miner throughput on real log lines: the ten public Loghub-2k sources
//! (`shared/corpus/loghub`, one miner per source as the syslog detector keeps one per
//! application), or, without the corpus, generated lines of the same flavour.
//!
//! `cargo bench -p mamori-models --bench templates`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mamori_models::templates::{MinerConfig, TemplateMiner};

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/corpus/loghub");
const SOURCES: [&str; 10] = [
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

/// The `Content` column of each source's structured file (last-but-two column; the fields are
/// read with a small CSV reader since contents hold commas and quotes).
fn sources() -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for ds in SOURCES {
        let path = format!("{CORPUS}/{ds}/corrected/{ds}_2k.log_structured_corrected.csv");
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let rows = csv(&text);
        let Some(col) = rows[0].iter().position(|h| h == "Content") else {
            continue;
        };
        out.push(
            rows[1..]
                .iter()
                .filter_map(|r| r.get(col).cloned())
                .collect(),
        );
    }
    if out.is_empty() {
        println!("Loghub corpus not found at {CORPUS}: generated lines instead");
        out.push(
            (0..20_000u32)
                .map(|i| match i % 4 {
                    0 => format!("Invalid user u{} from 10.0.{}.{}", i % 97, i % 7, i % 251),
                    1 => format!(
                        "session opened for user {} by (uid={})",
                        ["root", "ops", "hmi"][i as usize % 3],
                        i % 5
                    ),
                    2 => format!("Modbus unit {} timeout after {} ms", i % 32, 100 + i % 900),
                    _ => format!(
                        "link {} changed state to {}",
                        i % 8,
                        ["up", "down"][i as usize % 2]
                    ),
                })
                .collect(),
        );
    }
    out
}

fn csv(text: &str) -> Vec<Vec<String>> {
    let (mut rows, mut row, mut field, mut quoted) = (Vec::new(), Vec::new(), String::new(), false);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\r') => {}
            (false, '\n') => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (false, c) => field.push(c),
        }
    }
    if !field.is_empty() || !row.is_empty() {
        row.push(field);
        rows.push(row);
    }
    rows
}

fn bench(c: &mut Criterion) {
    let sources = sources();
    let lines: usize = sources.iter().map(Vec::len).sum();
    let mut g = c.benchmark_group("templates");
    g.throughput(Throughput::Elements(lines as u64));
    g.bench_function("mine_loghub_lines", |b| {
        b.iter(|| {
            for source in &sources {
                let mut m = TemplateMiner::new(MinerConfig::default()).unwrap();
                for l in source {
                    black_box(m.add(black_box(l)));
                }
                black_box(m.len());
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
