//! The online template miner: clusters, matching, generalisation and the bounded table.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::token::{Token, is_unit, tokenize};
use super::tuning::Tuning;

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
    /// Most memory, in bytes (estimated: template text plus bookkeeping), the template table
    /// may take; past it the least-used templates are evicted as for `max_templates`.
    pub max_bytes: usize,
}

impl Default for MinerConfig {
    fn default() -> Self {
        MinerConfig {
            max_templates: 10_000,
            max_tokens: 256,
            max_bytes: 8 * 1024 * 1024,
        }
    }
}

/// Smallest `max_bytes` accepted: room for one template of `max_tokens` positions at most.
const MIN_MAX_BYTES: usize = 64 * 1024;

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
        if self.max_tokens > 4096 {
            problems.push("max_tokens must be at most 4096".to_owned());
        }
        if self.max_bytes < MIN_MAX_BYTES {
            problems.push(format!("max_bytes must be at least {MIN_MAX_BYTES}"));
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
    /// Templates folded into an older one that differed from them at one position only
    /// ([`Tuning::merge_values`]); their ids now resolve to that one ([`TemplateMiner::resolve`]).
    #[serde(default)]
    pub templates_merged_total: u64,
    /// Merged ids forgotten because more than `max_templates` were remembered (the oldest goes);
    /// such an id no longer resolves.
    #[serde(default)]
    pub aliases_dropped_total: u64,
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
    /// A variable learned by merging: it matches any token, not only variable-looking ones.
    #[serde(default, skip_serializing_if = "is_false")]
    any: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
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
#[serde(deny_unknown_fields, from = "MinerState")]
pub struct TemplateMiner {
    config: MinerConfig,
    next_id: u64,
    clusters: BTreeMap<TemplateId, Cluster>,
    /// Drain's first tree levels: token count, then the first token when it is a constant (`""`
    /// when it is a variable, [`ANY_FIRST`] when a merge made it match anything) -> ids of the
    /// clusters there, in creation order. A message can only fit a template with its own length
    /// and first constant (or one whose first position matches anything), so only those buckets
    /// are searched.
    buckets: BTreeMap<usize, BTreeMap<String, Vec<TemplateId>>>,
    stats: MinerStats,
    /// How variables are told from constants.
    #[serde(default)]
    tuning: Tuning,
    /// Ids of merged templates -> the template they were folded into (at most `max_templates`).
    #[serde(default)]
    aliases: BTreeMap<TemplateId, TemplateId>,
    /// Estimated memory of the templates ([`cluster_bytes`]); recomputed on load.
    #[serde(skip)]
    bytes: usize,
}

/// The serialised form of [`TemplateMiner`]; loading recomputes what is not saved.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MinerState {
    config: MinerConfig,
    next_id: u64,
    clusters: BTreeMap<TemplateId, Cluster>,
    buckets: BTreeMap<usize, BTreeMap<String, Vec<TemplateId>>>,
    stats: MinerStats,
    #[serde(default)]
    tuning: Tuning,
    #[serde(default)]
    aliases: BTreeMap<TemplateId, TemplateId>,
}

impl From<MinerState> for TemplateMiner {
    fn from(s: MinerState) -> Self {
        let bytes = s.clusters.values().map(cluster_bytes).sum::<usize>();
        TemplateMiner {
            config: s.config,
            next_id: s.next_id,
            clusters: s.clusters,
            buckets: s.buckets,
            stats: s.stats,
            tuning: s.tuning,
            aliases: s.aliases,
            bytes,
        }
    }
}

/// Bookkeeping per remembered merged id (map entry and node share).
const ALIAS_BYTES: usize = 48;
/// Bookkeeping per template besides its positions (map entries in the table and the index).
const CLUSTER_OVERHEAD_BYTES: usize = 128;

/// Estimated memory of one template.
fn cluster_bytes(c: &Cluster) -> usize {
    let slots: usize = c
        .slots
        .iter()
        .map(|s| {
            std::mem::size_of::<Slot>()
                + s.sep.len()
                + s.shape.len()
                + s.text.as_ref().map_or(0, String::len)
        })
        .sum();
    std::mem::size_of::<Cluster>() + CLUSTER_OVERHEAD_BYTES + slots + c.tail.len()
}

/// Bucket key of templates whose first position matches any token (no token text holds a
/// space, so it cannot clash with a first constant).
const ANY_FIRST: &str = " ";

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
/// Longest separator and tail text kept in a template (the rest is not shown).
const MAX_SEP_BYTES: usize = 32;
/// Tokens read per template position allowed by `max_tokens`.
const TOKENS_PER_ITEM: usize = 4;

/// `text` cut to at most `max` bytes, at a character boundary.
fn clip(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.get(..end).unwrap_or("")
}

impl TemplateMiner {
    /// A miner with a validated configuration and the default [`Tuning`].
    pub fn new(config: MinerConfig) -> Result<Self, ConfigError> {
        Self::with_tuning(config, Tuning::default())
    }

    /// A miner with other mining parameters, for evaluation and cross-validation only: the
    /// default tuning is the one meant for every source.
    pub fn with_tuning(config: MinerConfig, tuning: Tuning) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(TemplateMiner {
            config,
            next_id: 1,
            clusters: BTreeMap::new(),
            buckets: BTreeMap::new(),
            stats: MinerStats::default(),
            tuning,
            aliases: BTreeMap::new(),
            bytes: 0,
        })
    }

    pub fn config(&self) -> &MinerConfig {
        &self.config
    }

    pub fn tuning(&self) -> &Tuning {
        &self.tuning
    }

    pub fn stats(&self) -> &MinerStats {
        &self.stats
    }

    /// Estimated memory of the template table in bytes (what [`MinerConfig::max_bytes`] bounds).
    pub fn memory_bytes(&self) -> usize {
        self.bytes
            .saturating_add(self.aliases.len().saturating_mul(ALIAS_BYTES))
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
                        let before = cluster_bytes(c);
                        let changed = generalize(c, &items);
                        if changed {
                            self.bytes = self
                                .bytes
                                .saturating_sub(before)
                                .saturating_add(cluster_bytes(c));
                        }
                        changed
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
            None => {
                let new = self.create(&items, tail, line, n);
                // Merging first: it may free the room eviction would otherwise make.
                let id = self.merge_siblings(new);
                self.enforce_bounds(id);
                (
                    id,
                    if id == new {
                        Change::Created
                    } else {
                        Change::Generalized
                    },
                )
            }
        };
        let template = self.clusters.get(&id).map(render).unwrap_or_default();
        Observation {
            id,
            template,
            change,
        }
    }

    /// The current template of `id`, if it is still kept. For the id of a merged template, the
    /// template it was folded into (whose view carries that template's id).
    pub fn template(&self, id: TemplateId) -> Option<TemplateView> {
        let id = self.resolve(id)?;
        self.clusters.get(&id).map(|c| view(id, c))
    }

    /// The id under which the messages of `id` are now counted: `id` itself while its template
    /// is kept, the surviving template's id after a merge, `None` once evicted or forgotten. Ids
    /// returned earlier by [`TemplateMiner::add`] should be passed through this before they are
    /// compared with later ones.
    pub fn resolve(&self, id: TemplateId) -> Option<TemplateId> {
        let id = self.aliases.get(&id).copied().unwrap_or(id);
        self.clusters.contains_key(&id).then_some(id)
    }

    /// Every kept template, in id (first-appearance) order.
    pub fn templates(&self) -> impl Iterator<Item = TemplateView> + '_ {
        self.clusters.iter().map(|(id, c)| view(*id, c))
    }

    fn prepare<'a>(&mut self, message: &'a str) -> (Vec<Item<'a>>, &'a str) {
        // Runs of variables fold into one item, so allow more tokens than items; past that the
        // message is cut, which bounds the work on any line.
        let limit = self.config.max_tokens.saturating_mul(TOKENS_PER_ITEM);
        let toks = tokenize(message.trim(), &self.tuning, limit);
        let mut items: Vec<Item<'a>> = Vec::with_capacity(toks.tokens.len());
        let mut truncated = toks.cut;
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
        let by_first = self.buckets.get(&items.len())?;
        let first = first_key_items(items);
        let own = by_first.get(first).into_iter().flatten();
        let any = by_first
            .get(ANY_FIRST)
            .filter(|_| !first.is_empty())
            .into_iter()
            .flatten();
        let mut best: Option<(usize, TemplateId)> = None;
        for id in own.chain(any) {
            let Some(c) = self.clusters.get(id) else {
                continue;
            };
            let Some(vars) = fits(c, items) else { continue };
            if best.is_none_or(|(bv, bid)| (vars, *id) < (bv, bid)) {
                best = Some((vars, *id));
            }
        }
        best.map(|(_, id)| id)
    }

    fn create(&mut self, items: &[Item<'_>], tail: &str, line: u64, n: usize) -> TemplateId {
        let slots = items
            .iter()
            .map(|it| Slot {
                sep: clip(it.sep, MAX_SEP_BYTES).to_owned(),
                text: if it.var {
                    None
                } else {
                    Some(it.text.to_owned())
                },
                shape: it.shape.clone(),
                any: false,
            })
            .collect();
        let cluster = Cluster {
            slots,
            tail: clip(tail, MAX_SEP_BYTES).to_owned(),
            count: 1,
            first_line: line,
            last_line: line,
        };
        let size = cluster_bytes(&cluster);
        let id = TemplateId(self.next_id);
        self.next_id += 1;
        self.clusters.insert(id, cluster);
        self.bytes = self.bytes.saturating_add(size);
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

    /// Evicts least-used templates, never `keep` (the one just used), while the table is over
    /// `max_templates` or `max_bytes`.
    fn enforce_bounds(&mut self, keep: TemplateId) {
        while self.clusters.len() > 1
            && (self.clusters.len() > self.config.max_templates
                || self.memory_bytes() > self.config.max_bytes)
        {
            if !self.evict_one(keep) {
                break;
            }
        }
    }

    /// Evicts the least-used template other than `keep`; whether there was one.
    fn evict_one(&mut self, keep: TemplateId) -> bool {
        let victim = self
            .clusters
            .iter()
            .filter(|(id, _)| **id != keep)
            .min_by_key(|(id, c)| (c.count, c.last_line, **id))
            .map(|(id, c)| (*id, c.slots.len(), first_key_slots(&c.slots).to_owned()));
        if let Some((id, n, key)) = victim {
            if let Some(c) = self.clusters.remove(&id) {
                self.bytes = self.bytes.saturating_sub(cluster_bytes(&c));
            }
            self.unindex(id, n, &key);
            self.aliases.retain(|_, to| *to != id);
            self.stats.templates_evicted_total += 1;
            return true;
        }
        false
    }

    fn unindex(&mut self, id: TemplateId, n: usize, key: &str) {
        if let Some(by_first) = self.buckets.get_mut(&n) {
            if let Some(v) = by_first.get_mut(key) {
                v.retain(|x| *x != id);
                if v.is_empty() {
                    by_first.remove(key);
                }
            }
            if by_first.is_empty() {
                self.buckets.remove(&n);
            }
        }
    }

    /// Folds `new` and the templates that differ from it at one position only into the oldest
    /// of them, with that position a variable, once there are [`Tuning::merge_values`] of them.
    /// Returns the id the message of `new` now counts under.
    ///
    /// Runs only when a template is created; the work is one pass over the templates of the
    /// same length (and first constant, unless the first position may merge), like a match.
    fn merge_siblings(&mut self, new: TemplateId) -> TemplateId {
        let tuning = self.tuning;
        if tuning.merge_values < 2 {
            return new;
        }
        let Some(c) = self.clusters.get(&new) else {
            return new;
        };
        let n = c.slots.len();
        let Some(by_first) = self.buckets.get(&n) else {
            return new;
        };
        let candidates: Vec<TemplateId> = if tuning.first_merge_min_constants.is_none() {
            by_first
                .get(first_key_slots(&c.slots))
                .cloned()
                .unwrap_or_default()
        } else {
            by_first.values().flatten().copied().collect()
        };
        // Position -> templates differing from `new` there only.
        let mut siblings: BTreeMap<usize, Vec<TemplateId>> = BTreeMap::new();
        for id in candidates {
            if id == new {
                continue;
            }
            let Some(other) = self.clusters.get(&id) else {
                continue;
            };
            if let Some(p) = single_difference(&c.slots, &other.slots, &tuning) {
                siblings.entry(p).or_default().push(id);
            }
        }
        // The position with the most siblings, the first on a tie.
        let Some((p, members)) = siblings
            .into_iter()
            .filter(|(_, v)| v.len() + 1 >= tuning.merge_values)
            .max_by_key(|(p, v)| (v.len(), std::cmp::Reverse(*p)))
        else {
            return new;
        };
        self.fold(p, new, members)
    }

    /// Folds `others` and `new` into the oldest of them with position `p` a variable that
    /// matches anything.
    fn fold(&mut self, p: usize, new: TemplateId, others: Vec<TemplateId>) -> TemplateId {
        let mut all = others;
        all.push(new);
        all.sort_unstable();
        let Some((&keep, folded)) = all.split_first() else {
            return new;
        };
        let mut count = 0u64;
        let mut first_line = u64::MAX;
        let mut last_line = 0u64;
        for id in &all {
            if let Some(c) = self.clusters.get(id) {
                count = count.saturating_add(c.count);
                first_line = first_line.min(c.first_line);
                last_line = last_line.max(c.last_line);
            }
        }
        for id in folded {
            if let Some(c) = self.clusters.remove(id) {
                self.bytes = self.bytes.saturating_sub(cluster_bytes(&c));
                let key = first_key_slots(&c.slots).to_owned();
                self.unindex(*id, c.slots.len(), &key);
                self.stats.templates_merged_total += 1;
            }
            for to in self.aliases.values_mut() {
                if *to == *id {
                    *to = keep;
                }
            }
            self.aliases.insert(*id, keep);
        }
        while self.aliases.len() > self.config.max_templates {
            if self.aliases.pop_first().is_some() {
                self.stats.aliases_dropped_total += 1;
            }
        }
        let Some(c) = self.clusters.get_mut(&keep) else {
            return new;
        };
        let old_key = first_key_slots(&c.slots).to_owned();
        let before = cluster_bytes(c);
        c.count = count;
        c.first_line = first_line;
        c.last_line = last_line;
        if let Some(s) = c.slots.get_mut(p) {
            s.text = None;
            s.any = true;
            s.shape = WILDCARD.to_owned();
        }
        self.bytes = self
            .bytes
            .saturating_sub(before)
            .saturating_add(cluster_bytes(c));
        let new_key = first_key_slots(&c.slots).to_owned();
        let n = c.slots.len();
        if new_key != old_key {
            self.unindex(keep, n, &old_key);
            let v = self
                .buckets
                .entry(n)
                .or_default()
                .entry(new_key)
                .or_default();
            v.push(keep);
            v.sort_unstable();
        }
        keep
    }
}

fn first_key_items<'a>(items: &[Item<'a>]) -> &'a str {
    match items.first() {
        Some(it) if !it.var => it.text,
        _ => "",
    }
}

fn first_key_slots(slots: &[Slot]) -> &str {
    match slots.first() {
        Some(Slot { text: Some(t), .. }) => t,
        Some(Slot { any: true, .. }) => ANY_FIRST,
        _ => "",
    }
}

/// The one position where `a` and `b` (of equal length) differ, if there is exactly one and `a`
/// has at least [`Tuning::merge_min_constants`] constants elsewhere. Two variables are equal; a
/// constant differs from a variable and from another constant.
fn single_difference(a: &[Slot], b: &[Slot], tuning: &Tuning) -> Option<usize> {
    let mut diff = None;
    let mut constants = 0usize;
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        let same = match (&x.text, &y.text) {
            (None, None) => true,
            (Some(s), Some(t)) => s == t,
            _ => false,
        };
        if same {
            constants += usize::from(x.text.is_some());
        } else if diff.replace(i).is_some() {
            return None;
        }
    }
    let p = diff?;
    let needed = if p == 0 {
        tuning.first_merge_min_constants?
    } else {
        tuning.merge_min_constants
    };
    (constants >= needed).then_some(p)
}

/// Whether `items` fits `c`, and if so how many variables `c` has. A constant must be matched by
/// the same constant, a variable by a variable-looking token.
fn fits(c: &Cluster, items: &[Item<'_>]) -> Option<usize> {
    let mut vars = 0usize;
    for (s, it) in c.slots.iter().zip(items) {
        let ok = match &s.text {
            None => {
                vars += 1;
                s.any || it.var
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
    use std::collections::BTreeSet;

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
            max_bytes: 10,
        })
        .unwrap_err();
        assert_eq!(err.problems.len(), 3);
    }

    #[test]
    fn word_parameters_merge_once_three_values_are_seen() {
        let mut m = miner();
        let a = m.add("Invalid user admin from 10.0.0.1");
        let b = m.add("Invalid user oracle from 10.0.0.2");
        assert_ne!(a.id, b.id, "two values may be two events");
        let c = m.add("Invalid user guest from 10.0.0.3");
        assert_eq!(c.id, a.id, "the oldest id survives");
        assert_eq!(c.change, Change::Generalized);
        assert_eq!(c.template, "Invalid user <*> from <*>");
        // Earlier ids resolve to the survivor; later values match it directly.
        assert_eq!(m.resolve(b.id), Some(a.id));
        assert_eq!(m.template(b.id).unwrap().id, a.id);
        assert_eq!(m.template(a.id).unwrap().count, 3);
        let d = m.add("Invalid user support from 10.0.0.4");
        assert_eq!((d.id, d.change), (a.id, Change::Unchanged));
        assert_eq!(m.len(), 1);
        assert_eq!(m.stats().templates_merged_total, 2);
    }

    #[test]
    fn short_messages_and_first_words_keep_their_words() {
        // One other constant is not enough context to call a word a parameter.
        let (_, obs) = mine(&["boot (command 1)", "wait (command 2)", "halt (command 3)"]);
        let ids: BTreeSet<u64> = obs.iter().map(|o| o.id.0).collect();
        assert_eq!(ids.len(), 3);
        let (_, obs) = mine(&[
            "cupsd startup succeeded",
            "syslogd startup succeeded",
            "klogd startup succeeded",
        ]);
        let ids: BTreeSet<u64> = obs.iter().map(|o| o.id.0).collect();
        assert_eq!(ids.len(), 3);
        // A first word with a long constant context is a parameter.
        let (m, obs) = mine(&[
            "com.apple.Safari.Update: told me to run this job; however, not yet",
            "com.apple.CacheDelete: told me to run this job; however, not yet",
            "com.apple.Spotlight: told me to run this job; however, not yet",
        ]);
        assert_eq!(obs[2].id, obs[0].id);
        assert_eq!(
            m.template(obs[1].id).unwrap().template,
            "<*>: told me to run this job; however, not yet"
        );
        // ... and later ones find it although their first word is new.
        let mut m = m;
        let o = m.add("com.apple.Mail: told me to run this job; however, not yet");
        assert_eq!((o.id, o.change), (obs[0].id, Change::Unchanged));
    }

    #[test]
    fn merged_ids_are_bounded_and_counted() {
        let config = MinerConfig {
            max_templates: 3,
            ..MinerConfig::default()
        };
        let mut m = TemplateMiner::new(config).unwrap();
        for family in ["opened", "closed"] {
            for user in ["ann", "bob", "eve"] {
                m.add(&format!("session {family} for {user} on console"));
            }
        }
        assert_eq!(m.len(), 2);
        assert_eq!(m.stats().templates_merged_total, 4);
        assert_eq!(m.aliases.len(), 3);
        assert!(m.stats().aliases_dropped_total > 0);
        assert_eq!(m.memory_bytes(), recount(&m));
    }

    /// The byte estimate as recomputed from scratch (what a reload computes).
    fn recount(m: &TemplateMiner) -> usize {
        m.clusters.values().map(cluster_bytes).sum::<usize>() + m.aliases.len() * ALIAS_BYTES
    }

    #[test]
    fn byte_budget_evicts_and_is_kept_exactly() {
        let config = MinerConfig {
            max_bytes: MIN_MAX_BYTES,
            ..MinerConfig::default()
        };
        let mut m = TemplateMiner::new(config).unwrap();
        for i in 0..2000u32 {
            // Distinct constant words (no digits): a new template each time.
            let w: String = i
                .to_string()
                .bytes()
                .map(|b| char::from(b'a' + (b - b'0')))
                .collect();
            m.add(&format!("{w} {w} {w} {w} {w} {w} {w} {w}"));
            assert!(m.memory_bytes() <= MIN_MAX_BYTES);
        }
        assert!(m.stats().templates_evicted_total > 0);
        assert_eq!(m.memory_bytes(), recount(&m));
        let json = serde_json::to_string(&m).unwrap();
        let back: TemplateMiner = serde_json::from_str(&json).unwrap();
        assert_eq!(back.memory_bytes(), m.memory_bytes());
    }

    #[test]
    fn hostile_lines_are_bounded() {
        let mut m = miner();
        let long_word = "A".repeat(1 << 20);
        let many_tokens = "x ".repeat(200_000);
        let junk: String = (0u32..50_000)
            .map(|i| {
                char::from_u32(i.wrapping_mul(2_654_435_761) % 0x11_0000).unwrap_or('\u{fffd}')
            })
            .collect();
        let unclosed = format!("k=\"{}", "v ".repeat(10_000));
        for line in [&long_word, &many_tokens, &junk, &unclosed] {
            let o = m.add(line);
            let t = m.template(o.id).unwrap();
            // A template never stores more than its bounded positions.
            assert!(
                t.template.len() <= 256 * (MAX_SEP_BYTES + MAX_SHAPE_BYTES + 64),
                "{}",
                t.template.len()
            );
        }
        assert!(m.stats().lines_truncated_total >= 2);
        assert!(m.memory_bytes() <= MinerConfig::default().max_bytes);
    }

    #[test]
    fn state_saved_before_merging_existed_loads() {
        let old = r#"{"config":{"max_templates":5,"max_tokens":8},"next_id":2,
            "clusters":{"1":{"slots":[{"sep":"","text":"a","shape":"<*>"},
            {"sep":" ","text":null,"shape":"<*>"}],"tail":"","count":1,"first_line":0,
            "last_line":0}},"buckets":{"2":{"a":[1]}},"stats":{"lines_total":1,
            "templates_created_total":1,"templates_evicted_total":0,"lines_truncated_total":0}}"#;
        let mut m: TemplateMiner = serde_json::from_str(old).unwrap();
        assert_eq!(m.tuning(), &Tuning::default());
        assert_eq!(m.add("a 7").id, TemplateId(1));
        assert_eq!(m.memory_bytes(), recount(&m));
    }

    const SAMPLE: &[&str] = &[
        "Invalid user admin from 10.0.0.1",
        "Invalid user oracle from 10.0.0.2",
        "Invalid user guest from 10.0.0.3",
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
            let config = MinerConfig { max_templates: 4, max_tokens: 8, ..MinerConfig::default() };
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
