//! The online template miner: clusters, matching, generalisation and the bounded table.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::token::{Token, is_unit, tokenize};

/// Text that stands for a variable part in a rendered template.
pub const WILDCARD: &str = "<*>";

/// Stable identifier of a template (cluster), assigned from 1 in order of first appearance and
/// never reused, not even after the cluster is evicted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TemplateId(pub u64);

/// Miner settings. One configuration serves every log source: nothing here is meant to be tuned
/// per dataset.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MinerConfig {
    /// Most templates kept at once. When a new template would exceed it, the least-used template
    /// (lowest count, then least recently seen, then oldest id) is evicted and counted in
    /// [`MinerStats::templates_evicted_total`].
    pub max_templates: usize,
    /// Longest message prefix, in tokens, that is mined; the rest of a longer message is folded
    /// into a trailing wildcard (counted in [`MinerStats::lines_truncated_total`]).
    pub max_tokens: usize,
}

impl Default for MinerConfig {
    fn default() -> Self {
        MinerConfig {
            max_templates: 10_000,
            max_tokens: 256,
        }
    }
}

/// Invalid miner configuration (every problem found, not only the first).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid template miner configuration: {}", .problems.join("; "))]
pub struct ConfigError {
    /// One human-readable line per problem.
    pub problems: Vec<String>,
}

impl MinerConfig {
    /// Checks every field and reports all problems at once.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        if self.max_templates == 0 {
            problems.push("max_templates must be at least 1".to_owned());
        }
        if self.max_tokens < 2 {
            problems.push("max_tokens must be at least 2".to_owned());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError { problems })
        }
    }
}

/// Counters kept by the miner.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MinerStats {
    /// Messages mined.
    pub lines_total: u64,
    /// Templates created.
    pub templates_created_total: u64,
    /// Templates evicted because the table was full.
    pub templates_evicted_total: u64,
    /// Messages longer than `max_tokens` tokens.
    pub lines_truncated_total: u64,
}

/// One position of a template.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Slot {
    /// Separator text before this position, as first seen.
    sep: String,
    /// Constant text, or `None` for a variable.
    text: Option<String>,
    /// How a variable renders: `<*>`, or the first-seen shape of a run of variable tokens glued
    /// by punctuation (`<*>:<*>`).
    shape: String,
}

/// A cluster of messages sharing one template.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Cluster {
    slots: Vec<Slot>,
    tail: String,
    count: u64,
    /// Index (0-based, in [`MinerStats::lines_total`] order) of the first message.
    first_line: u64,
    last_line: u64,
}

/// What happened to the template a message was assigned to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// A new template was created for this message.
    Created,
    /// The message joined a template and made its text more general (a variable part whose
    /// punctuation differed between messages is now shown as a plain `<*>`).
    Generalized,
    /// The message matched a template as it was.
    Unchanged,
}

/// The miner's answer for one message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observation {
    pub id: TemplateId,
    /// The template text as known after this message (`<*>` marks variables).
    pub template: String,
    pub change: Change,
}

/// Read-only view of one template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TemplateView {
    pub id: TemplateId,
    pub template: String,
    /// Messages assigned so far.
    pub count: u64,
    /// Index (0-based) of the first message of this template among all mined messages.
    pub first_line: u64,
    /// Index of the latest message of this template.
    pub last_line: u64,
}

/// Online log-template miner. See the module documentation for the algorithm.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateMiner {
    config: MinerConfig,
    next_id: u64,
    clusters: BTreeMap<TemplateId, Cluster>,
    /// Drain's first tree levels: token count, then the first token when it is a constant (`""`
    /// when it is a variable) -> ids of the clusters there, in creation order. A message can only
    /// fit a template with its own length and first constant, so only that bucket is searched.
    buckets: BTreeMap<usize, BTreeMap<String, Vec<TemplateId>>>,
    stats: MinerStats,
}

/// A message prepared for matching: variable runs collapsed into one item.
struct Item<'a> {
    sep: &'a str,
    text: &'a str,
    var: bool,
    shape: String,
    /// The run grew past [`MAX_SHAPE_BYTES`]; its shape stays `<*>`.
    capped: bool,
}

/// Longest rendered shape kept for one run of variables.
const MAX_SHAPE_BYTES: usize = 256;

impl TemplateMiner {
    /// A miner with a validated configuration.
    pub fn new(config: MinerConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(TemplateMiner {
            config,
            next_id: 1,
            clusters: BTreeMap::new(),
            buckets: BTreeMap::new(),
            stats: MinerStats::default(),
        })
    }

    pub fn config(&self) -> &MinerConfig {
        &self.config
    }

    pub fn stats(&self) -> &MinerStats {
        &self.stats
    }

    /// Number of templates currently kept.
    pub fn len(&self) -> usize {
        self.clusters.len()
    }

    pub fn is_empty(&self) -> bool {
        self.clusters.is_empty()
    }

    /// Mines one message (the content, without a syslog or application header).
    pub fn add(&mut self, message: &str) -> Observation {
        let line = self.stats.lines_total;
        self.stats.lines_total += 1;
        let (items, tail) = self.prepare(message);
        let n = items.len();
        let best = self.best_match(&items);
        let (id, change) = match best {
            Some(id) => {
                let generalized = match self.clusters.get_mut(&id) {
                    Some(c) => {
                        c.count += 1;
                        c.last_line = line;
                        generalize(c, &items)
                    }
                    None => false,
                };
                (
                    id,
                    if generalized {
                        Change::Generalized
                    } else {
                        Change::Unchanged
                    },
                )
            }
            None => (self.create(&items, tail, line, n), Change::Created),
        };
        let template = self.clusters.get(&id).map(render).unwrap_or_default();
        Observation {
            id,
            template,
            change,
        }
    }

    /// The current template of `id`, if it is still kept.
    pub fn template(&self, id: TemplateId) -> Option<TemplateView> {
        self.clusters.get(&id).map(|c| view(id, c))
    }

    /// Every kept template, in id (first-appearance) order.
    pub fn templates(&self) -> impl Iterator<Item = TemplateView> + '_ {
        self.clusters.iter().map(|(id, c)| view(*id, c))
    }

    fn prepare<'a>(&mut self, message: &'a str) -> (Vec<Item<'a>>, &'a str) {
        let toks = tokenize(message.trim());
        let mut items: Vec<Item<'a>> = Vec::with_capacity(toks.tokens.len());
        let mut truncated = false;
        for t in &toks.tokens {
            let Token { sep, text, var } = *t;
            // A run of variables (and units right after a variable) is one variable whatever
            // separates its parts, so lists of numbers and optional sub-fields
            // (`12 bytes (1.2 KB)`) do not change the template's length.
            if let Some(last) = items.last_mut()
                && last.var
                && (var || is_unit(text))
            {
                // The shape is only for display; past a bound it is a plain `<*>`.
                if !last.capped {
                    last.shape.push_str(sep);
                    last.shape.push_str(if var { WILDCARD } else { text });
                    if last.shape.len() > MAX_SHAPE_BYTES {
                        last.shape = WILDCARD.to_owned();
                        last.capped = true;
                    }
                }
                continue;
            }
            if items.len() >= self.config.max_tokens {
                truncated = true;
                break;
            }
            items.push(Item {
                sep,
                text,
                var,
                shape: WILDCARD.to_owned(),
                capped: false,
            });
        }
        if truncated {
            self.stats.lines_truncated_total += 1;
            if let Some(last) = items.last_mut() {
                last.var = true;
                last.shape = WILDCARD.to_owned();
            }
            return (items, "");
        }
        (items, toks.tail)
    }

    /// The most specific template (fewest variables, then oldest) that `items` fits.
    fn best_match(&self, items: &[Item<'_>]) -> Option<TemplateId> {
        let ids = self
            .buckets
            .get(&items.len())?
            .get(first_key_items(items))?;
        let mut best: Option<(usize, TemplateId)> = None;
        for id in ids {
            let Some(c) = self.clusters.get(id) else {
                continue;
            };
            let Some(vars) = fits(c, items) else { continue };
            if best.is_none_or(|(bv, _)| vars < bv) {
                best = Some((vars, *id));
            }
        }
        best.map(|(_, id)| id)
    }

    fn create(&mut self, items: &[Item<'_>], tail: &str, line: u64, n: usize) -> TemplateId {
        if self.clusters.len() >= self.config.max_templates {
            self.evict_one();
        }
        let id = TemplateId(self.next_id);
        self.next_id += 1;
        let slots = items
            .iter()
            .map(|it| Slot {
                sep: it.sep.to_owned(),
                text: if it.var {
                    None
                } else {
                    Some(it.text.to_owned())
                },
                shape: it.shape.clone(),
            })
            .collect();
        let cluster = Cluster {
            slots,
            tail: tail.to_owned(),
            count: 1,
            first_line: line,
            last_line: line,
        };
        self.clusters.insert(id, cluster);
        let key = first_key_items(items).to_owned();
        self.buckets
            .entry(n)
            .or_default()
            .entry(key)
            .or_default()
            .push(id);
        self.stats.templates_created_total += 1;
        id
    }

    fn evict_one(&mut self) {
        let victim = self
            .clusters
            .iter()
            .min_by_key(|(id, c)| (c.count, c.last_line, **id))
            .map(|(id, c)| (*id, c.slots.len(), first_key_slots(&c.slots).to_owned()));
        if let Some((id, n, key)) = victim {
            self.clusters.remove(&id);
            if let Some(by_first) = self.buckets.get_mut(&n) {
                if let Some(v) = by_first.get_mut(&key) {
                    v.retain(|x| *x != id);
                    if v.is_empty() {
                        by_first.remove(&key);
                    }
                }
                if by_first.is_empty() {
                    self.buckets.remove(&n);
                }
            }
            self.stats.templates_evicted_total += 1;
        }
    }
}

fn first_key_items<'a>(items: &[Item<'a>]) -> &'a str {
    match items.first() {
        Some(it) if !it.var => it.text,
        _ => "",
    }
}

fn first_key_slots(slots: &[Slot]) -> &str {
    slots.first().and_then(|s| s.text.as_deref()).unwrap_or("")
}

/// Whether `items` fits `c`, and if so how many variables `c` has. A constant must be matched by
/// the same constant, a variable by a variable-looking token.
fn fits(c: &Cluster, items: &[Item<'_>]) -> Option<usize> {
    let mut vars = 0usize;
    for (s, it) in c.slots.iter().zip(items) {
        let ok = match &s.text {
            None => {
                vars += 1;
                it.var
            }
            Some(t) => !it.var && t == it.text,
        };
        if !ok {
            return None;
        }
    }
    Some(vars)
}

/// Turns a variable whose shape differs from the message's (`<*>:<*>` against `<*> sec`) into a
/// plain `<*>`. Returns whether anything changed.
fn generalize(c: &mut Cluster, items: &[Item<'_>]) -> bool {
    let mut changed = false;
    for (s, it) in c.slots.iter_mut().zip(items) {
        if s.text.is_none() && s.shape != WILDCARD && s.shape != it.shape {
            s.shape = WILDCARD.to_owned();
            changed = true;
        }
    }
    changed
}

fn render(c: &Cluster) -> String {
    let mut out = String::new();
    for s in &c.slots {
        out.push_str(&s.sep);
        match &s.text {
            Some(t) => out.push_str(t),
            None => out.push_str(&s.shape),
        }
    }
    out.push_str(&c.tail);
    out
}

fn view(id: TemplateId, c: &Cluster) -> TemplateView {
    TemplateView {
        id,
        template: render(c),
        count: c.count,
        first_line: c.first_line,
        last_line: c.last_line,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
    use super::*;

    fn miner() -> TemplateMiner {
        TemplateMiner::new(MinerConfig::default()).unwrap()
    }

    fn mine(lines: &[&str]) -> (TemplateMiner, Vec<Observation>) {
        let mut m = miner();
        let obs = lines.iter().map(|l| m.add(l)).collect();
        (m, obs)
    }

    #[test]
    fn hand_made_lines_give_expected_templates() {
        // Shapes seen on PLC gateways and in Loghub (HDFS, HPC, Proxifier, HealthApp).
        let (m, obs) = mine(&[
            "Received block blk_-1608999687919862906 of size 91178 from /10.250.10.6",
            "Received block blk_7503483334202473044 of size 233217 from /10.250.19.102",
            "ambient=31",
            "ambient=29",
            "Fan speeds ( 3552 3534 3375 4166 3515 3479 )",
            "proxy.example.org:5070 close, 0 bytes sent, 0 bytes received, lifetime <1 sec",
            "proxy.example.org:5070 close, 2473 bytes (2.41 KB) sent, 1926 bytes received, lifetime 00:20",
            "Modbus unit 17 timeout after 250 ms",
            "Modbus unit 3 timeout after 1 s",
        ]);
        let ids: Vec<u64> = obs.iter().map(|o| o.id.0).collect();
        assert_eq!(ids, vec![1, 1, 2, 2, 3, 4, 4, 5, 5]);
        let texts: Vec<String> = m.templates().map(|t| t.template).collect();
        assert_eq!(
            texts,
            vec![
                "Received block <*> of size <*> from <*>",
                "ambient=<*>",
                "Fan speeds ( <*> <*> <*> <*> <*> <*> )",
                "<*>:<*> close, <*> sent, <*> bytes received, lifetime <*>",
                "Modbus unit <*> timeout after <*>",
            ]
        );
        assert_eq!(obs[0].change, Change::Created);
        assert_eq!(obs[1].change, Change::Unchanged);
        // The template as known at the time, before the second message showed other shapes.
        assert_eq!(
            obs[5].template,
            "<*>:<*> close, <*> bytes sent, <*> bytes received, lifetime <*> sec"
        );
        assert_eq!(obs[6].change, Change::Generalized);
    }

    #[test]
    fn one_word_apart_stays_apart() {
        let (_, obs) = mine(&[
            "host1.example:443 open through proxy proxy.example:5070 HTTPS",
            "host2.example:80 open through proxy proxy.example:5070 SOCKS5",
            "host3.example:443 open through proxy proxy.example:5070 HTTPS",
            "setLightsOn(true)",
            "closeQs",
            "instantCollapse",
        ]);
        let ids: Vec<u64> = obs.iter().map(|o| o.id.0).collect();
        assert_eq!(ids, vec![1, 2, 1, 3, 4, 5]);
        assert_eq!(obs[3].template, "setLightsOn(<*>)");
    }

    #[test]
    fn counts_and_first_seen_order() {
        let (m, _) = mine(&["a 1", "b", "a 2", "a 3"]);
        let v: Vec<(u64, u64, u64, u64)> = m
            .templates()
            .map(|t| (t.id.0, t.count, t.first_line, t.last_line))
            .collect();
        assert_eq!(v, vec![(1, 3, 0, 3), (2, 1, 1, 1)]);
        assert_eq!(m.stats().lines_total, 4);
        assert_eq!(m.stats().templates_created_total, 2);
    }

    #[test]
    fn full_table_evicts_least_used_and_never_reuses_ids() {
        let config = MinerConfig {
            max_templates: 2,
            ..MinerConfig::default()
        };
        let mut m = TemplateMiner::new(config).unwrap();
        assert_eq!(m.add("alpha").id, TemplateId(1));
        assert_eq!(m.add("alpha").id, TemplateId(1));
        assert_eq!(m.add("beta").id, TemplateId(2));
        // Full: `beta` (count 1) goes, `alpha` (count 2) stays.
        assert_eq!(m.add("gamma").id, TemplateId(3));
        assert_eq!(m.len(), 2);
        assert!(m.template(TemplateId(2)).is_none());
        assert_eq!(m.stats().templates_evicted_total, 1);
        // A returning template gets a fresh id.
        assert_eq!(m.add("beta").id, TemplateId(4));
        assert_eq!(m.add("alpha").id, TemplateId(1));
    }

    #[test]
    fn long_messages_are_truncated_and_counted() {
        let config = MinerConfig {
            max_tokens: 3,
            ..MinerConfig::default()
        };
        let mut m = TemplateMiner::new(config).unwrap();
        let a = m.add("one two three four five");
        let b = m.add("one two six seven");
        assert_eq!(a.id, b.id);
        assert_eq!(a.template, "one two <*>");
        assert_eq!(m.stats().lines_truncated_total, 2);
    }

    #[test]
    fn invalid_config_reports_every_problem() {
        let err = TemplateMiner::new(MinerConfig {
            max_templates: 0,
            max_tokens: 1,
        })
        .unwrap_err();
        assert_eq!(err.problems.len(), 2);
    }

    const SAMPLE: &[&str] = &[
        "Accepted socket connection from /10.10.34.11:52012",
        "Client attempting to renew session 0x14ed93111f20005 at /10.10.34.11:52014",
        "Accepted socket connection from /10.10.34.12:40000",
        "REPORT : 7189 5132 153988 240",
        "getTodayTotalDetailSteps = 1514040660000##7189##549659##8661##16256##29409806",
        "lifetime <1 sec",
        "lifetime 00:20",
        "",
        "   ",
    ];

    #[test]
    fn same_input_gives_byte_identical_state() {
        let (a, _) = mine(SAMPLE);
        let (b, _) = mine(SAMPLE);
        assert_eq!(
            serde_json::to_string(&a).unwrap(),
            serde_json::to_string(&b).unwrap()
        );
    }

    #[test]
    fn saved_state_answers_like_the_original() {
        let (head, tail) = SAMPLE.split_at(4);
        let (mut original, _) = mine(head);
        let json = serde_json::to_string(&original).unwrap();
        let mut restored: TemplateMiner = serde_json::from_str(&json).unwrap();
        assert_eq!(restored, original);
        for line in tail.iter().chain(SAMPLE) {
            assert_eq!(restored.add(line), original.add(line));
        }
        assert_eq!(
            serde_json::to_string(&restored).unwrap(),
            serde_json::to_string(&original).unwrap()
        );
    }

    #[test]
    fn unknown_config_fields_are_rejected() {
        assert!(serde_json::from_str::<MinerConfig>(r#"{"max_templates": 5, "st": 0.5}"#).is_err());
        let c: MinerConfig = serde_json::from_str(r#"{"max_templates": 5}"#).unwrap();
        assert_eq!(c.max_templates, 5);
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_text_never_panics(lines in proptest::collection::vec(".{0,80}", 1..20)) {
            let config = MinerConfig { max_templates: 4, max_tokens: 8 };
            let mut m = TemplateMiner::new(config).unwrap();
            for l in &lines {
                let o = m.add(l);
                proptest::prop_assert!(m.template(o.id).is_some());
                proptest::prop_assert!(m.len() <= 4);
            }
            proptest::prop_assert_eq!(m.stats().lines_total, lines.len() as u64);
        }
    }
}
