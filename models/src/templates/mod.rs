//! Online log-template mining: turns one log message at a time into a stable template id and a
//! template text with `<*>` for the variable parts. Owns the tokeniser, the shape-based variable
//! classifier and the bounded, serialisable template table ([`TemplateMiner`]).
//!
//! # Algorithm
//!
//! Drain-style, with the similarity threshold (the setting Drain tunes per dataset) replaced by
//! typed tokens and a count of distinct values, so that one setting ([`Tuning`]) serves every
//! log source:
//!
//! 1. **Tokenise** the message at whitespace and structural punctuation (`=`, `:`, `,`, `;`,
//!    brackets, quotes, `|`, `#`, `@`, dot leaders). Each token keeps the separator text before
//!    it, so a template renders back with the message's own punctuation (`ambient=<*>`).
//! 2. **Classify by shape.** A token is a variable when it holds a decimal digit, is a long
//!    hexadecimal run, a Unix or Windows path, a URL or component name, a boolean or `null`, a
//!    weekday/month name, a word longer than 64 bytes, a lower-case dotted name of three or more
//!    labels (host names: `ns.example.com`), or the value of a `key=value` pair (`user=root`,
//!    `tag="View Lock"`). Within one word (text between whitespace, commas, semicolons or dot
//!    leaders) that holds a variable, every piece is a variable except keys (`key=`, `key:`,
//!    `call(`), so `proxy.example:5070` and `node-12` are variables as a whole while `uid=1000`
//!    keeps `uid`.
//! 3. **Collapse runs.** Consecutive variables, and units right after a variable (`KB`, `sec`,
//!    `bytes`, ...), form one variable, so number lists and optional sub-fields
//!    (`12 bytes (1.2 KB)`, `<1 sec`) do not change the template length.
//! 4. **Match** within the bucket of templates of the same length and first constant (Drain's
//!    first tree levels): a constant must be matched by the same constant, a shape variable by a
//!    variable-looking token, a merged variable by anything; the most specific fitting template
//!    (fewest variables, then oldest) wins. No fit: a new template.
//! 5. **Merge word parameters.** A new template that differs from others of the same length at
//!    one position only, all of them agreeing on at least two other constants (four when the
//!    position is the first word), joins them once three such templates exist: that position
//!    becomes a variable that matches any token (`Invalid user <*> from <*>`). Two values in one
//!    place stay apart (`... via HTTPS` / `... via SOCKS5` are usually two events), and so do
//!    short messages (`boot (command 3)` / `halt (command 3)`). The oldest template survives
//!    under its id; the others' ids resolve to it ([`TemplateMiner::resolve`]).
//!
//! The numbers in step 5 and the optional shapes of step 2 were chosen by cross-validation over
//! the public Loghub sources (chosen on some, scored on the others: `models/tests/miner_cv.rs`),
//! not by the score on all of them.
//!
//! Ids are assigned from 1 in order of first appearance and never get reused. A template's text
//! changes when a collapsed variable shows different punctuation in different messages (it then
//! renders as a plain `<*>`) and when a merge makes a word a variable; a merged template's id
//! then stands for the surviving one, which callers that keep ids (rates per template) should
//! look up with [`TemplateMiner::resolve`].
//!
//! Limitation: a word parameter is generalised only from its third distinct value in the same
//! context; one that takes two values, or that varies together with another word, keeps a
//! template per value. Messages whose variable parts differ in token count (free text inside a
//! variable) get one template per count.
//!
//! # Bounds
//!
//! At most [`MinerConfig::max_templates`] templates are kept, in at most
//! [`MinerConfig::max_bytes`] bytes (estimated from the stored text). A new template that does
//! not merge and finds the table full evicts the least-used other template (lowest count, then
//! least recently seen, then oldest id), counted in [`MinerStats::templates_evicted_total`]; an
//! evicted id is never reused, so a template that comes back gets a new id. Merged ids are
//! remembered up to `max_templates` (older ones forgotten, [`MinerStats::aliases_dropped_total`]).
//! Messages longer than [`MinerConfig::max_tokens`] positions are mined on their prefix, the
//! rest folded into a trailing variable ([`MinerStats::lines_truncated_total`]); a message is
//! read for at most four tokens per position, so the work per message is bounded whatever its
//! length, and a constant keeps at most 64 bytes, a separator 32.
//!
//! The whole miner state is `Serialize`/`Deserialize` and deterministic (ordered maps only), so a
//! saved baseline loads back into a miner that answers exactly as the original would.

mod miner;
mod token;
mod tuning;

pub use miner::{
    Change, ConfigError, MinerConfig, MinerStats, Observation, TemplateId, TemplateMiner,
    TemplateView, WILDCARD,
};
pub use tuning::{DottedNames, Tuning};
