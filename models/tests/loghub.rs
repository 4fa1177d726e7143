//! Accuracy of the template miner on the public Loghub-2k datasets (`shared/corpus/loghub`,
//! `corrected/` ground truth of Khan et al., ICSE 2022), beside the published Drain numbers.
//!
//! Every dataset is mined with the same default configuration, line by line in file order; each
//! line's id is resolved at the end (templates merged later count under the survivor). How the
//! default tuning was chosen without fitting it to these ten: `miner_cv.rs`.
//! GA (grouping accuracy): a line is correct iff the set of lines sharing its final template
//! equals the set of lines sharing its ground-truth template. PA (parsing accuracy): a line is
//! correct iff the final template text of its cluster equals its ground-truth template text, both
//! normalised the same way (whitespace runs collapsed, then the Loghub-2.0 folding of consecutive
//! variables: `<*><*>`, `<*>.<*>`, `<*>:<*>`, `#<*>#` become `<*>`).
//!
//! Throughput is measured by the benchmark (`cargo bench -p mamori-models --bench templates`),
//! not here. Skips (with a message) when the corpus is absent, fails then under
//! `MAMORI_REQUIRE_CORPUS=1`. `MAMORI_LOGHUB_DEBUG=<dataset>` prints the
//! wrongly grouped ground-truth templates of one dataset.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::collections::BTreeSet;

use common::{load, parse_csv, score};
use mamori_models::templates::Tuning;

/// Regression floor for the average GA over the ten datasets (measured value minus a margin).
/// Measured 0.983 on 2026-11-26 (shape rules only), 0.987 with the cross-validated tuning.
const MIN_AVERAGE_GA: f64 = 0.98;
/// Floor for every dataset's GA: issue 12 asks that each public source keep 0.95, and the worst
/// source is the target, not the average (HPC measured 0.951: the truth splits
/// `via interface ee0` / `alt0` / `scip0`, which the miner reads as one word parameter).
const MIN_SOURCE_GA: f64 = 0.95;

/// Published Drain results (shared/corpus/loghub/PUBLISHED.md): GA of Zhu et al. ICSE 2019
/// (original templates, per-dataset tuned settings) and GA / PA of Jiang et al. ISSTA 2024
/// (Loghub-2k with loghub-2.0 corrected templates; no Android there).
/// `(dataset, GA 2019, Some((GA 2024, PA 2024)))`.
type Published = (&'static str, f64, Option<(f64, f64)>);

const PUBLISHED_DRAIN: [Published; 10] = [
    ("Android", 0.911, None),
    ("BGL", 0.963, Some((0.963, 0.342))),
    ("HDFS", 0.998, Some((0.998, 0.500))),
    ("HPC", 0.887, Some((0.887, 0.635))),
    ("Hadoop", 0.948, Some((0.948, 0.269))),
    ("HealthApp", 0.780, Some((0.780, 0.231))),
    ("Proxifier", 0.527, Some((0.526, 0.000))),
    ("Spark", 0.920, Some((0.922, 0.362))),
    ("Thunderbird", 0.955, Some((0.955, 0.046))),
    ("Zookeeper", 0.967, Some((0.967, 0.497))),
];

#[test]
fn csv_reader_handles_quotes() {
    let rows = parse_csv("a,b\r\n\"x, \"\"y\"\"\",2\n");
    assert_eq!(rows, vec![vec!["a", "b"], vec!["x, \"y\"", "2"]]);
}

#[test]
fn loghub_2k_grouping_and_parsing_accuracy() {
    let Some(dir) = common::corpus() else { return };
    let debug = std::env::var("MAMORI_LOGHUB_DEBUG").ok();
    println!(
        "{:<12} {:>6} {:>6} {:>6} {:>6} {:>7}  | {:>10} {:>10} {:>10}",
        "dataset", "GA", "PA", "tmpl", "truth", "shapeGA", "Drain GA19", "Drain GA24", "Drain PA24"
    );
    let (mut sum_ga, mut sum_pa, mut sum_d19) = (0.0, 0.0, 0.0);
    let mut worst = (f64::INFINITY, "");
    for (ds, d19, d24) in PUBLISHED_DRAIN {
        let lines = load(&dir, ds);
        assert_eq!(lines.len(), 2000, "{ds}");
        let s = score(ds, &lines, Tuning::default(), debug.as_deref() == Some(ds));
        let shapes = score(ds, &lines, Tuning::shapes_only(), false);
        let truth: BTreeSet<&str> = lines.iter().map(|l| l.event.as_str()).collect();
        let (g24, p24) = d24.map_or(("n/a".to_owned(), "n/a".to_owned()), |(g, p)| {
            (format!("{g:.3}"), format!("{p:.3}"))
        });
        println!(
            "{ds:<12} {:>6.3} {:>6.3} {:>6} {:>6} {:>7.3}  | {d19:>10.3} {g24:>10} {p24:>10}",
            s.ga,
            s.pa,
            s.templates,
            truth.len(),
            shapes.ga
        );
        sum_ga += s.ga;
        if s.ga < worst.0 {
            worst = (s.ga, ds);
        }
        sum_pa += s.pa;
        sum_d19 += d19;
    }
    let k = PUBLISHED_DRAIN.len() as f64;
    let (avg_ga, avg_pa) = (sum_ga / k, sum_pa / k);
    println!(
        "{:<12} {avg_ga:>6.3} {avg_pa:>6.3} {:>13}  | {:>10.3}",
        "average",
        "",
        sum_d19 / k
    );

    assert!(
        avg_ga >= MIN_AVERAGE_GA,
        "average GA {avg_ga:.4} < floor {MIN_AVERAGE_GA}"
    );
    assert!(
        worst.0 >= MIN_SOURCE_GA,
        "{} GA {:.4} < floor {MIN_SOURCE_GA}",
        worst.1,
        worst.0
    );
}
