//! The incident report an operator sends to the sector's information-sharing body and to the
//! authorities, in Markdown ([`markdown`]) or as one self-contained HTML page ([`html`]).
//!
//! Both are rendered from one outline ([`Doc`]) so that they say the same things in the same
//! order: summary, service impact, affected assets, the ATT&CK for ICS techniques, detections
//! with their evidence, the timeline and the response status. Every string is escaped when rendered, ours as well as
//! the data's (host names, device identities, summaries and evidence came off a network an
//! attacker may be on): the renderers do not know which is which, so nothing slips through.

use std::collections::BTreeMap;
use std::fmt::Write;

use mamori_models::detect::attack;
use serde_json::Value;

use super::{affected_assets, human_duration, service_impact, time_to_detect_ms, utc, utc_ms};
use crate::incident::{IncidentDetail, IncidentStatus, StoredAlert};

/// Evidence values longer than this are cut (per-window feature vectors can be long).
const MAX_EVIDENCE_CHARS: usize = 500;

/// A time to detect beyond this says more about the data (a replay, a sensor's backlog)
/// than about detection.
const LIVE_DETECTION_MAX_MS: u64 = 86_400_000;

/// The report as Markdown (CommonMark with GitHub tables).
pub fn markdown(detail: &IncidentDetail) -> String {
    let doc = outline(detail);
    let mut out = String::new();
    let _ = writeln!(out, "# Incident report: {}\n", escape_markdown(&doc.title));
    if let Some(b) = &doc.banner {
        let _ = writeln!(out, "> **{}**\n", escape_markdown(b));
    }
    for s in &doc.sections {
        let _ = writeln!(out, "## {}\n", escape_markdown(&s.heading));
        md_blocks(&s.blocks, &mut out);
    }
    let _ = writeln!(out, "---\n\n{}", escape_markdown(&doc.footer));
    out
}

/// The report as one HTML page with its CSS inline and a Content-Security-Policy that
/// allows nothing else (no script, no remote resource), in case an escape is ever missed.
pub fn html(detail: &IncidentDetail) -> String {
    let doc = outline(detail);
    let mut out = String::new();
    let title = escape_html(&doc.title);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>Incident report: {title}</title>\n<style>{CSS}</style>\n</head>\n<body>\n\
         <h1>Incident report: {title}</h1>\n"
    );
    if let Some(b) = &doc.banner {
        let _ = writeln!(out, "<p class=\"banner\">{}</p>", escape_html(b));
    }
    for s in &doc.sections {
        let _ = writeln!(out, "<section>\n<h2>{}</h2>", escape_html(&s.heading));
        html_blocks(&s.blocks, &mut out);
        out.push_str("</section>\n");
    }
    let _ = write!(
        out,
        "<footer>{}</footer>\n</body>\n</html>\n",
        escape_html(&doc.footer)
    );
    out
}

const CSS: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:60rem;\
margin:2rem auto;padding:0 1rem;color:#1a1a1a;line-height:1.45}\
h1{font-size:1.5rem}h2{font-size:1.2rem;border-bottom:1px solid #ccc;padding-bottom:.2rem;margin-top:2rem}\
h3{font-size:1rem;margin-bottom:.3rem}\
table{border-collapse:collapse;width:100%;margin:.5rem 0;font-size:.9rem}\
th,td{border:1px solid #ccc;padding:.25rem .5rem;text-align:left;vertical-align:top;overflow-wrap:anywhere}\
th{background:#f2f2f2}dl{display:grid;grid-template-columns:max-content 1fr;gap:.2rem 1rem}\
dt{font-weight:600}dd{margin:0;overflow-wrap:anywhere}\
.banner{background:#fff3cd;border:2px solid #b58900;padding:.5rem 1rem;font-weight:700}\
footer{margin-top:2rem;font-size:.8rem;color:#555}\
@media print{body{margin:0;max-width:none}}";

/// HTML-escapes text for element content and quoted attribute values. C0 control
/// characters other than tab and newline (not allowed in HTML text) become U+FFFD.
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\t' | '\n' => out.push(c),
            c if c.is_control() => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// Escapes text for one line of Markdown, table cells included: line breaks become spaces
/// (a newline would end the table row or the list item), and the punctuation that Markdown
/// or inline HTML would interpret gets a backslash (CommonMark lets any ASCII punctuation
/// be escaped so). `<` in particular: raw HTML passes through most Markdown renderers.
pub fn escape_markdown(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\r' | '\n' => out.push(' '),
            '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '|' | '#' | '~' | '&' | '!' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// The report's outline, free of any markup.
#[derive(Debug)]
struct Doc {
    title: String,
    /// Shown first and loud: an exercise must never be read as a real incident.
    banner: Option<String>,
    sections: Vec<Section>,
    footer: String,
}

#[derive(Debug)]
struct Section {
    heading: String,
    blocks: Vec<Block>,
}

#[derive(Debug)]
enum Block {
    Text(String),
    /// Label and value pairs.
    Facts(Vec<(&'static str, String)>),
    Table {
        head: Vec<&'static str>,
        rows: Vec<Vec<String>>,
    },
    Sub {
        heading: String,
        blocks: Vec<Block>,
    },
}

fn md_blocks(blocks: &[Block], out: &mut String) {
    for b in blocks {
        match b {
            Block::Text(t) => {
                let _ = writeln!(out, "{}\n", escape_markdown(t));
            }
            Block::Facts(facts) => {
                for (k, v) in facts {
                    let _ = writeln!(out, "- **{}:** {}", escape_markdown(k), escape_markdown(v));
                }
                out.push('\n');
            }
            Block::Table { head, rows } => {
                md_row(head.iter().map(|h| escape_markdown(h)), out);
                md_row(head.iter().map(|_| "---".to_owned()), out);
                for r in rows {
                    md_row(r.iter().map(|c| escape_markdown(c)), out);
                }
                out.push('\n');
            }
            Block::Sub { heading, blocks } => {
                let _ = writeln!(out, "### {}\n", escape_markdown(heading));
                md_blocks(blocks, out);
            }
        }
    }
}

fn md_row(cells: impl Iterator<Item = String>, out: &mut String) {
    let cells: Vec<String> = cells.collect();
    let _ = writeln!(out, "| {} |", cells.join(" | "));
}

fn html_blocks(blocks: &[Block], out: &mut String) {
    for b in blocks {
        match b {
            Block::Text(t) => {
                let _ = writeln!(out, "<p>{}</p>", escape_html(t));
            }
            Block::Facts(facts) => {
                out.push_str("<dl>\n");
                for (k, v) in facts {
                    let _ = writeln!(
                        out,
                        "<dt>{}</dt><dd>{}</dd>",
                        escape_html(k),
                        escape_html(v)
                    );
                }
                out.push_str("</dl>\n");
            }
            Block::Table { head, rows } => {
                out.push_str("<table>\n<thead><tr>");
                for h in head {
                    let _ = write!(out, "<th>{}</th>", escape_html(h));
                }
                out.push_str("</tr></thead>\n<tbody>\n");
                for r in rows {
                    out.push_str("<tr>");
                    for c in r {
                        let _ = write!(out, "<td>{}</td>", escape_html(c));
                    }
                    out.push_str("</tr>\n");
                }
                out.push_str("</tbody>\n</table>\n");
            }
            Block::Sub { heading, blocks } => {
                let _ = writeln!(out, "<h3>{}</h3>", escape_html(heading));
                html_blocks(blocks, out);
            }
        }
    }
}

fn or_dash(v: Option<&String>) -> String {
    v.cloned().unwrap_or_else(|| "–".to_owned())
}

fn join<I: IntoIterator<Item = T>, T: ToString>(items: I) -> String {
    let v: Vec<String> = items.into_iter().map(|x| x.to_string()).collect();
    if v.is_empty() {
        "–".to_owned()
    } else {
        v.join(", ")
    }
}

/// An evidence value as text: strings as they are, the rest as compact JSON, cut at
/// [`MAX_EVIDENCE_CHARS`].
fn evidence_text(v: &Value) -> String {
    let s = match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    match s.char_indices().nth(MAX_EVIDENCE_CHARS) {
        Some((cut, _)) => format!("{}…", s.get(..cut).unwrap_or_default()),
        None => s,
    }
}

/// "`time` by `who`", or "not yet".
fn when_by(at: Option<u64>, by: Option<&String>) -> String {
    match (at, by) {
        (Some(at), Some(by)) => format!("{} by {by}", utc_ms(at)),
        (Some(at), None) => utc_ms(at),
        (None, _) => "not yet".to_owned(),
    }
}

fn outline(detail: &IncidentDetail) -> Doc {
    let inc = &detail.incident;
    let title = if inc.title.trim().is_empty() {
        format!("incident {} at {}", inc.id, inc.site)
    } else {
        inc.title.clone()
    };
    let banner = inc.exercise.then(|| {
        "EXERCISE: this incident comes from a drill, not a real attack. No real-world action is required."
            .to_owned()
    });

    let ttd = match time_to_detect_ms(inc) {
        Some(ms) if ms > LIVE_DETECTION_MAX_MS => format!(
            "{} (over a day: the traffic was replayed or reached the collector late)",
            human_duration(ms)
        ),
        Some(ms) => human_duration(ms),
        None => "not measurable: the first event is stamped after the detection (the sensor's and the collector's clocks disagree)".to_owned(),
    };
    let summary = vec![
        ("Incident", format!("#{}", inc.id)),
        ("Site", inc.site.clone()),
        ("Status", inc.status.as_str().to_owned()),
        ("Severity", inc.severity.as_str().to_owned()),
        (
            "Exercise",
            if inc.exercise { "yes (a drill)" } else { "no" }.to_owned(),
        ),
        (
            "Subject",
            inc.asset.clone().unwrap_or_else(|| "site-wide".to_owned()),
        ),
        ("First seen (event time)", utc(inc.first_seen)),
        (
            "Last seen (event time)",
            utc(inc.last_seen.max(inc.first_seen)),
        ),
        ("Detected", utc_ms(inc.detected_unix_ms)),
        ("Time to detect", ttd),
        (
            "Acknowledged",
            when_by(inc.acknowledged_unix_ms, inc.acknowledged_by.as_ref()),
        ),
        (
            "Resolved",
            when_by(inc.resolved_unix_ms, inc.resolved_by.as_ref()),
        ),
        (
            "Alerts",
            format!("{} from {}", inc.alert_count, join(&inc.detectors)),
        ),
    ];

    let affected = affected_assets(detail);
    let assets = if affected.is_empty() {
        Block::Text(
            "No asset is named by this incident's alerts: it is a site-wide finding.".to_owned(),
        )
    } else {
        Block::Table {
            head: vec![
                "Asset",
                "Inventory",
                "Roles",
                "Vendor",
                "Product",
                "Revision",
                "Criticality",
                "Host names",
                "Description",
            ],
            rows: affected
                .iter()
                .map(|a| match a.inventory {
                    Some(inv) => {
                        let id = inv.identity.clone().unwrap_or_default();
                        vec![
                            a.name.clone(),
                            "known".to_owned(),
                            join(inv.roles.iter().map(|r| r.as_str())),
                            or_dash(id.vendor.as_ref()),
                            or_dash(id.product.as_ref()),
                            or_dash(id.revision.as_ref()),
                            inv.criticality.as_str().to_owned(),
                            join(&inv.hostnames),
                            or_dash(inv.description.as_ref()),
                        ]
                    }
                    None => {
                        let mut row = vec![a.name.clone(), "not in inventory".to_owned()];
                        row.resize(9, "–".to_owned());
                        row
                    }
                })
                .collect(),
        }
    };

    let detections = if detail.alerts.is_empty() {
        vec![Block::Text("No alerts are attached.".to_owned())]
    } else {
        detail
            .alerts
            .iter()
            .enumerate()
            .map(|(i, sa)| detection(i + 1, sa))
            .collect()
    };

    let techniques = techniques(detail);

    let timeline = if inc.timeline.is_empty() {
        Block::Text("No timeline entries.".to_owned())
    } else {
        Block::Table {
            head: vec!["Time (UTC)", "Event", "By", "What"],
            rows: inc
                .timeline
                .iter()
                .map(|t| {
                    vec![
                        utc_ms(t.at_unix_ms),
                        t.kind.clone(),
                        t.actor.clone().unwrap_or_else(|| "collector".to_owned()),
                        t.text.clone(),
                    ]
                })
                .collect(),
        }
    };

    Doc {
        title,
        banner,
        sections: vec![
            Section {
                heading: "Summary".into(),
                blocks: vec![Block::Facts(summary)],
            },
            Section {
                heading: "Service impact".into(),
                blocks: vec![Block::Text(service_impact(detail))],
            },
            Section {
                heading: "Affected assets".into(),
                blocks: vec![assets],
            },
            Section {
                heading: "Techniques (MITRE ATT&CK for ICS)".into(),
                blocks: vec![techniques],
            },
            Section {
                heading: "Detections".into(),
                blocks: detections,
            },
            Section {
                heading: "Timeline".into(),
                blocks: vec![timeline],
            },
            Section {
                heading: "Response status".into(),
                blocks: vec![Block::Text(response_status(detail))],
            },
        ],
        footer: format!(
            "Generated by Mamori from incident {} at site {}. Times are UTC: first and last seen are the captured traffic's event times, the others the collector's clock.",
            inc.id, inc.site
        ),
    }
}

/// The techniques the incident's alerts show, each with its tactic and how many alerts show
/// it, in the order of the matrix ids.
fn techniques(detail: &IncidentDetail) -> Block {
    let mut shown: BTreeMap<&str, usize> = BTreeMap::new();
    for sa in &detail.alerts {
        for id in &sa.alert.attack {
            *shown.entry(id.as_str()).or_default() += 1;
        }
    }
    if shown.is_empty() {
        return Block::Text(
            "No alert of this incident maps to an ATT&CK for ICS technique.".to_owned(),
        );
    }
    Block::Table {
        head: vec!["Technique", "Name", "Tactic", "Alerts"],
        rows: shown
            .into_iter()
            .map(|(id, n)| {
                let t = attack::technique(id);
                vec![
                    id.to_owned(),
                    t.map_or("–", |t| t.name).to_owned(),
                    t.map_or("–", |t| t.tactic).to_owned(),
                    n.to_string(),
                ]
            })
            .collect(),
    }
}

/// `T0855 Unauthorized Command Message, T0846 Remote System Discovery`.
fn technique_names(ids: &[String]) -> String {
    ids.iter()
        .map(|id| match attack::technique(id) {
            Some(t) => format!("{} {}", t.id, t.name),
            None => id.clone(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn detection(n: usize, sa: &StoredAlert) -> Block {
    let a = &sa.alert;
    let mut facts = vec![
        ("Summary", a.summary.clone()),
        (
            "Occurrences",
            if a.count > 1 {
                format!(
                    "{} between {} and {}",
                    a.count,
                    utc(a.ts),
                    utc(a.last_ts.max(a.ts))
                )
            } else {
                format!("1 at {}", utc(a.ts))
            },
        ),
    ];
    if let Some(ip) = a.src_ip {
        facts.push(("Source", ip.to_string()));
    }
    if let Some(ip) = a.dst_ip {
        facts.push(("Destination", ip.to_string()));
    }
    if let Some(asset) = &a.asset {
        facts.push(("Asset", asset.clone()));
    }
    if !a.attack.is_empty() {
        facts.push(("ATT&CK for ICS", technique_names(&a.attack)));
    }
    facts.push(("Alert", format!("#{} (score {:.2})", sa.id, a.score)));
    let mut blocks = vec![Block::Facts(facts)];
    if !a.evidence.is_empty() {
        blocks.push(Block::Table {
            head: vec!["Evidence", "Value"],
            rows: a
                .evidence
                .iter()
                .map(|(k, v)| vec![k.clone(), evidence_text(v)])
                .collect(),
        });
    }
    Block::Sub {
        heading: format!(
            "{n}. {}: {} / {} ({})",
            utc(a.ts),
            a.detector.as_str(),
            a.kind,
            a.severity.as_str()
        ),
        blocks,
    }
}

fn response_status(detail: &IncidentDetail) -> String {
    let inc = &detail.incident;
    let after = |at: u64| human_duration(at.saturating_sub(inc.detected_unix_ms));
    let who = |by: Option<&String>| by.map(|b| format!(" by {b}")).unwrap_or_default();
    let mut s = match (inc.status, inc.acknowledged_unix_ms, inc.resolved_unix_ms) {
        (IncidentStatus::Resolved, _, Some(r)) => format!(
            "Resolved{} at {}, {} after detection.",
            who(inc.resolved_by.as_ref()),
            utc_ms(r),
            after(r)
        ),
        (IncidentStatus::Resolved, _, None) => "Resolved.".to_owned(),
        (IncidentStatus::Acknowledged, Some(a), _) => format!(
            "Being handled: acknowledged{} at {}, {} after detection; not resolved yet.",
            who(inc.acknowledged_by.as_ref()),
            utc_ms(a),
            after(a)
        ),
        (IncidentStatus::Acknowledged, None, _) => {
            "Being handled: acknowledged; not resolved yet.".to_owned()
        }
        (IncidentStatus::Open, ..) => format!(
            "Open: detected at {}, not yet taken by a responder.",
            utc_ms(inc.detected_unix_ms)
        ),
    };
    if inc.status == IncidentStatus::Resolved
        && let Some(a) = inc.acknowledged_unix_ms
    {
        let _ = write!(
            s,
            " It had been acknowledged{} at {}.",
            who(inc.acknowledged_by.as_ref()),
            utc_ms(a)
        );
    }
    if inc.exercise {
        s.push_str(" This was an exercise: no real-world action is required.");
    }
    s
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
    use super::*;
    use crate::export::fixtures;

    #[test]
    fn escape_html_neutralises_script_payloads() {
        assert_eq!(
            escape_html("<script>alert('x')</script>"),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"
        );
        assert_eq!(
            escape_html("\"><img src=x onerror=alert(1)>&amp;"),
            "&quot;&gt;&lt;img src=x onerror=alert(1)&gt;&amp;amp;"
        );
        assert_eq!(
            escape_html("a\u{0}b\u{1b}c\td\ne"),
            "a\u{FFFD}b\u{FFFD}c\td\ne"
        );
        assert_eq!(escape_html("Überlauf 10.0.0.5"), "Überlauf 10.0.0.5");
    }

    #[test]
    fn the_report_names_each_technique_with_its_tactic() {
        let d = fixtures::ordinary();
        let md = markdown(&d);
        assert!(md.contains("## Techniques (MITRE ATT"), "{md}");
        for id in &d.incident.techniques {
            let t = attack::technique(id).unwrap();
            assert!(md.contains(t.name) && md.contains(t.tactic), "{id} in {md}");
        }
        assert!(!d.incident.techniques.is_empty());
        let page = html(&d);
        assert!(
            page.contains("T0855 Unauthorized Command Message"),
            "{page}"
        );
    }

    #[test]
    fn escape_markdown_keeps_data_on_one_line_and_inert() {
        assert_eq!(escape_markdown("a|b\nc\r\nd"), "a\\|b c  d");
        assert_eq!(
            escape_markdown("<script>[x](javascript:y) *b* `c`"),
            "\\<script\\>\\[x\\](javascript:y) \\*b\\* \\`c\\`"
        );
        assert_eq!(escape_markdown("\\|"), "\\\\\\|");
    }

    /// Every string the hostile fixture carries must appear only escaped.
    #[test]
    fn html_escapes_every_string_from_data() {
        let page = html(&fixtures::hostile());
        assert!(!page.contains("<script"), "{page}");
        assert!(!page.contains("'x'"));
        assert!(page.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&quot;&amp;|pipe"));
        // Each field of the fixture made it into the page, escaped.
        for field in [
            "Title ",
            "site ",
            "timeline ",
            "actor ",
            "ack ",
            "summary ",
            "kind ",
            "key ",
            "value ",
            "host ",
            "desc ",
            "vendor ",
            "product ",
            "rev ",
        ] {
            assert!(
                page.contains(&format!("{field}&lt;script&gt;")),
                "{field} missing or unescaped"
            );
        }
        // The only tags are ours.
        let tags: std::collections::BTreeSet<&str> = page
            .split('<')
            .skip(1)
            .map(|t| {
                t.split(|c: char| c == '>' || c.is_whitespace())
                    .next()
                    .unwrap()
            })
            .collect();
        for t in tags {
            assert!(
                [
                    "!DOCTYPE", "html", "/html", "head", "/head", "meta", "title", "/title",
                    "style", "/style", "body", "/body", "h1", "/h1", "h2", "/h2", "h3", "/h3",
                    "section", "/section", "dl", "/dl", "dt", "/dt", "dd", "/dd", "p", "/p",
                    "table", "/table", "thead", "/thead", "tbody", "/tbody", "tr", "/tr", "th",
                    "/th", "td", "/td", "footer", "/footer",
                ]
                .contains(&t),
                "unexpected tag {t}"
            );
        }
    }

    #[test]
    fn markdown_escapes_pipes_newlines_and_html_from_data() {
        let md = markdown(&fixtures::hostile());
        // No `<` from data reaches the renderer unescaped.
        assert!(!md.replace("\\<", "").contains('<'), "{md}");
        assert!(md.contains("\\<script\\>"));
        // Table rows keep their column count: no raw pipe or newline from data.
        for line in md.lines().filter(|l| l.starts_with('|')) {
            let unescaped = line.replace("\\|", "");
            let cols = unescaped.matches('|').count();
            assert!(cols == 3 || cols == 5 || cols == 10, "{cols} in {line}");
        }
        assert!(md.contains("pipe new line"));
        assert!(!md.contains("pipe\nnew"));
    }

    #[test]
    fn reports_are_deterministic() {
        for d in [
            fixtures::ordinary(),
            fixtures::ipv6(),
            fixtures::exercise(),
            fixtures::no_assets(),
            fixtures::hostile(),
        ] {
            assert_eq!(markdown(&d), markdown(&d.clone()));
            assert_eq!(html(&d), html(&d.clone()));
        }
    }

    #[test]
    fn markdown_report_says_what_the_authorities_ask() {
        let md = markdown(&fixtures::ordinary());
        for needle in [
            "# Incident report: 10.0.0.66 wrote 9000",
            "- **Site:** plant-north",
            "- **Status:** acknowledged",
            "- **Severity:** critical",
            "- **First seen (event time):** 2024-05-01 10:00:00 UTC",
            "- **Detected:** 2024-05-01 10:00:04 UTC",
            "- **Time to detect:** 4 s",
            "- **Acknowledged:** 2024-05-01 10:10:00 UTC by oncall-anna",
            "- **Resolved:** not yet",
            "Integrity of process control",
            "Availability",
            "| 10.0.0.5/1 | known | modbus\\_server | Schneider Electric | M340 | v3.20 | critical |",
            "| 10.0.0.66 | not in inventory |",
            "### 1. 2024-05-01 10:00:00 UTC: allowlist / new\\_host (high)",
            "| func | 16 |",
            "- **Occurrences:** 3 between 2024-05-01 10:00:00 UTC and 2024-05-01 10:00:30 UTC",
            "| 2024-05-01 10:10:00 UTC | acknowledged | oncall-anna | Taken by oncall-anna. |",
            "Being handled: acknowledged by oncall-anna at 2024-05-01 10:10:00 UTC, 9 min 56 s after detection",
        ] {
            assert!(md.contains(needle), "missing {needle:?} in\n{md}");
        }
        assert!(!md.contains("EXERCISE"));
    }

    #[test]
    fn an_exercise_says_so_first_and_last() {
        let md = markdown(&fixtures::exercise());
        let first_section = md.find("## Summary").unwrap();
        let banner = md.find("EXERCISE").unwrap();
        assert!(banner < first_section);
        assert!(md.contains("no real-world action is required"));
        assert!(md.contains(
            "Resolved by oncall-anna at 2024-05-01 11:00:00 UTC, 59 min 56 s after detection."
        ));
        let page = html(&fixtures::exercise());
        assert!(page.contains("<p class=\"banner\">EXERCISE"));
    }

    #[test]
    fn a_site_wide_incident_reports_no_assets_and_no_direct_impact() {
        let md = markdown(&fixtures::no_assets());
        assert!(md.contains("site-wide finding"));
        assert!(md.contains("- **Subject:** site-wide"));
        assert!(md.contains("no impact on the service is established"));
        assert!(md.contains("No timeline entries."));
        assert!(md.contains("Open: detected at 2024-05-01 10:00:03 UTC"));
    }

    #[test]
    fn reconnaissance_alone_has_no_direct_impact() {
        let mut d = fixtures::ordinary();
        d.alerts.truncate(1);
        d.alerts[0].alert.evidence.clear();
        assert!(
            markdown(&d).contains("no direct impact on the service was observed"),
            "{}",
            markdown(&d)
        );
    }

    #[test]
    fn html_is_self_contained() {
        let page = html(&fixtures::ordinary());
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert!(page.contains("<style>"));
        assert!(!page.contains("<link"));
        assert!(!page.contains("src="));
        assert!(page.contains("default-src 'none'"));
        assert!(page.trim_end().ends_with("</html>"));
    }

    #[test]
    fn long_evidence_is_cut_on_a_char_boundary() {
        let long = Value::String("ü".repeat(MAX_EVIDENCE_CHARS + 10));
        let t = evidence_text(&long);
        assert_eq!(t.chars().count(), MAX_EVIDENCE_CHARS + 1);
        assert!(t.ends_with('…'));
    }
}
