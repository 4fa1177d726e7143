//! Reading a TOML configuration file into its typed form with every problem at once.
//!
//! `toml::from_str` stops at the first problem and names it by byte offset: an operator with
//! three mistakes needs three runs, and is told "invalid type: string "ninety", expected u32"
//! without the key. So the text is parsed once into a table that keeps each key's position
//! (syntax errors, recovered where the parser can go on), then deserialized again and again:
//! each failure is recorded under the dotted path of its key (`serde_path_to_error`) and the
//! key's line, the entry is taken out, and the rest is tried again, until it deserializes or
//! nothing more can be taken out. An entry taken out reads as absent, so its defaults apply
//! and what follows is still checked; a "missing field" that only the removal caused is not
//! reported. When a required entry is missing or unreadable there is no typed value, so the
//! checks of the values (ranges, files) wait until it is fixed: every TOML problem is still
//! reported.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde_path_to_error::Segment;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::Problem;

/// Bound on deserialization passes: each takes one entry out, and a file with more problems
/// than this has bigger ones.
const MAX_PASSES: usize = 100;

/// One step of a key path.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Step {
    Key(String),
    Index(usize),
}

/// `a.b[2].c`, as operators write it.
fn dotted(path: &[Step]) -> String {
    let mut out = String::new();
    for step in path {
        match step {
            Step::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Step::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// Line (from 1) and column (from 1, in characters) of a byte offset.
fn position(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// The line of every key in the document, by path.
fn key_lines(table: &DeTable<'_>, text: &str) -> BTreeMap<Vec<Step>, usize> {
    fn walk(
        value: &DeValue<'_>,
        path: &mut Vec<Step>,
        text: &str,
        out: &mut BTreeMap<Vec<Step>, usize>,
    ) {
        match value {
            DeValue::Table(t) => {
                for (k, v) in t.iter() {
                    path.push(Step::Key(k.get_ref().to_string()));
                    out.insert(path.clone(), position(text, k.span().start).0);
                    walk(v.get_ref(), path, text, out);
                    path.pop();
                }
            }
            DeValue::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    path.push(Step::Index(i));
                    out.insert(path.clone(), position(text, v.span().start).0);
                    walk(v.get_ref(), path, text, out);
                    path.pop();
                }
            }
            _ => {}
        }
    }
    let mut out = BTreeMap::new();
    let mut path = Vec::new();
    // Walking needs a value; the root is a table.
    for (k, v) in table.iter() {
        path.push(Step::Key(k.get_ref().to_string()));
        out.insert(path.clone(), position(text, k.span().start).0);
        walk(v.get_ref(), &mut path, text, &mut out);
        path.pop();
    }
    out
}

/// The text between the backticks after `prefix` in a serde message (`unknown field `x``).
fn quoted_after<'m>(message: &'m str, prefix: &str) -> Option<&'m str> {
    let rest = message.split_once(prefix)?.1;
    Some(rest.split_once('`')?.0)
}

/// Takes the entry at `path` out of `root`. An entry inside an array cannot be taken out
/// alone: the key holding the array goes. Returns the path taken out.
fn remove(root: &mut DeTable<'_>, path: &[Step]) -> Option<Vec<Step>> {
    let keys: Vec<&String> = path
        .iter()
        .map_while(|s| match s {
            Step::Key(k) => Some(k),
            Step::Index(_) => None,
        })
        .collect();
    let (last, parents) = keys.split_last()?;
    let mut table = root;
    for k in parents {
        match table.get_mut(k.as_str()).map(Spanned::get_mut) {
            Some(DeValue::Table(t)) => table = t,
            _ => return None,
        }
    }
    table.remove(last.as_str())?;
    Some(keys.into_iter().map(|k| Step::Key(k.clone())).collect())
}

fn steps(path: &serde_path_to_error::Path) -> Vec<Step> {
    path.iter()
        .filter_map(|s| match s {
            Segment::Map { key } => Some(Step::Key(key.clone())),
            Segment::Seq { index } => Some(Step::Index(*index)),
            Segment::Enum { .. } | Segment::Unknown => None,
        })
        .collect()
}

/// Deserializes the TOML `text` as `T`. Returns what could be read (absent when the text is
/// not TOML, or when a required entry is missing or wrong) and every problem found, each
/// under its dotted key (or its line and column for a syntax error) with the line in the
/// reason. `T` is read with every entry that had a problem taken out, so a caller that
/// validates it further reports its own problems beside these.
pub fn parse_toml<T: DeserializeOwned>(text: &str) -> (Option<T>, Vec<Problem>) {
    let (mut root, errors) = DeTable::parse_recoverable(text);
    if !errors.is_empty() {
        let problems = errors
            .iter()
            .map(|e| {
                let (line, column) = e.span().map_or((0, 0), |s| position(text, s.start));
                Problem {
                    key: format!("line {line}, column {column}"),
                    reason: format!("not valid TOML: {}", e.message().trim_end()),
                }
            })
            .collect();
        return (None, problems);
    }
    let lines = key_lines(root.get_ref(), text);
    let mut problems: Vec<Problem> = Vec::new();
    // Entries taken out: a "missing field" under one of them is of our making.
    let mut removed: Vec<Vec<Step>> = Vec::new();
    for _ in 0..MAX_PASSES {
        let de = toml::de::Deserializer::from(root.clone());
        let err = match serde_path_to_error::deserialize::<_, T>(de) {
            Ok(value) => return (Some(value), problems),
            Err(e) => e,
        };
        let mut path = steps(err.path());
        let inner = err.into_inner();
        let message = inner.message().trim_end().to_owned();
        let missing = quoted_after(&message, "missing field `").map(str::to_owned);
        if let Some(field) = quoted_after(&message, "unknown field `")
            && path.last() != Some(&Step::Key(field.to_owned()))
        {
            path.push(Step::Key(field.to_owned()));
        }
        let ours = |p: &[Step]| removed.iter().any(|r| p.starts_with(r));
        let (key_path, reason) = match &missing {
            // The table lacks a required key: the table itself is what goes.
            Some(field) => {
                let mut key = path.clone();
                key.push(Step::Key(field.clone()));
                (key, format!("missing: {message}"))
            }
            None => (path.clone(), message),
        };
        if !ours(&key_path) {
            let line = lines
                .get(&key_path)
                .or_else(|| lines.get(&path))
                .copied()
                .or_else(|| inner.span().map(|s| position(text, s.start).0));
            let reason = match line {
                Some(line) => format!("line {line}: {reason}"),
                None => reason,
            };
            problems.push(Problem {
                key: if key_path.is_empty() {
                    "(top level)".to_owned()
                } else {
                    dotted(&key_path)
                },
                reason,
            });
        }
        match remove(root.get_mut(), &path) {
            Some(gone) => removed.push(gone),
            None => return (None, problems),
        }
    }
    (None, problems)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use std::net::SocketAddr;

    // Fields are only deserialized: what is read is the test's subject.
    #[allow(dead_code)]
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Config {
        #[serde(default)]
        listen: Option<SocketAddr>,
        server: Server,
        #[serde(default)]
        extra: Option<Extra>,
    }

    #[allow(dead_code)]
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Server {
        name: String,
        #[serde(default)]
        max_connections: u32,
        #[serde(default)]
        timeout_seconds: u32,
    }

    #[allow(dead_code)]
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Extra {
        required: String,
        #[serde(default)]
        ports: Vec<u16>,
    }

    fn problems(text: &str) -> Vec<(String, String)> {
        let (_, p) = parse_toml::<Config>(text);
        p.into_iter().map(|p| (p.key, p.reason)).collect()
    }

    #[test]
    fn a_good_file_reads_without_problems() {
        let (c, p) = parse_toml::<Config>("[server]\nname = \"a\"\n");
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(c.unwrap().server.name, "a");
    }

    #[test]
    fn every_problem_at_once_each_under_its_key_and_line() {
        let text = "\
listen = \"not an address\"

[server]
name = \"a\"
timeout_seconds = \"ninety\"
max_conections = 5

[extra]
ports = [1, 2, 70000]
";
        let got = problems(text);
        assert_eq!(got.len(), 5, "{got:#?}");
        let find = |key: &str| {
            got.iter()
                .find(|(k, _)| k == key)
                .map(|(_, r)| r.clone())
                .unwrap_or_else(|| panic!("no problem at {key}: {got:#?}"))
        };
        assert!(find("listen").starts_with("line 1: "), "{got:#?}");
        let timeout = find("server.timeout_seconds");
        assert!(
            timeout.starts_with("line 5: ") && timeout.contains("ninety"),
            "{timeout}"
        );
        // The unknown key is named on its own line (line 6, not the one before).
        let typo = find("server.max_conections");
        assert!(typo.starts_with("line 6: unknown field"), "{typo}");
        let ports = find("extra.ports[2]");
        assert!(ports.starts_with("line 9: "), "{ports}");
        // `extra` also lacks `required`, reported under its key.
        assert!(find("extra.required").contains("missing"), "{got:#?}");
    }

    #[test]
    fn a_missing_required_table_is_one_problem() {
        let got = problems("listen = \"127.0.0.1:1\"\n");
        assert_eq!(got.len(), 1, "{got:#?}");
        assert_eq!(got[0].0, "server");
    }

    #[test]
    fn a_wrong_required_key_is_not_reported_again_as_missing() {
        let got = problems("[server]\nname = 5\n");
        assert_eq!(got.len(), 1, "{got:#?}");
        assert_eq!(got[0].0, "server.name");
        assert!(got[0].1.starts_with("line 2: invalid type"), "{got:#?}");
    }

    #[test]
    fn syntax_errors_give_line_and_column() {
        let got = problems("[server]\nname = \"a\nmax_connections = 1\n");
        assert!(!got.is_empty());
        assert!(got[0].0.starts_with("line 2, column "), "{got:#?}");
        assert!(got[0].1.starts_with("not valid TOML"), "{got:#?}");
    }

    #[test]
    fn positions_count_lines_from_one() {
        let text = "a\nbc\n\nd";
        assert_eq!(position(text, 0), (1, 1));
        assert_eq!(position(text, 2), (2, 1));
        assert_eq!(position(text, 3), (2, 2));
        assert_eq!(position(text, 6), (4, 1));
    }
}
