//! Online log-template mining: turns one log message at a time into a stable template id and a
//! template text with `<*>` for the variable parts. Owns the tokeniser, the shape-based variable
//! classifier and the bounded, serialisable template table ([`TemplateMiner`]).
//!
//! # Algorithm
//!
//! Drain-style, with the similarity threshold (the setting Drain tunes per dataset) replaced by
//! typed tokens, so that one configuration serves every log source:
//!
//! 1. **Tokenise** the message at whitespace and structural punctuation (`=`, `:`, `,`, `;`,
//!    brackets, quotes, `|`, `#`, `@`, dot leaders). Each token keeps the separator text before
//!    it, so a template renders back with the message's own punctuation (`ambient=<*>`).
//! 2. **Classify by shape.** A token is a variable when it holds a decimal digit, is a long
//!    hexadecimal run, a path/URL/component name, a boolean or `null`, or a weekday/month name.
//!    Within one word (text between whitespace, commas, semicolons or dot leaders) that holds a
//!    variable, every piece is a variable except keys (`key=`, `key:`, `call(`), so
//!    `proxy.example:5070` and `node-12` are variables as a whole while `uid=1000` keeps `uid`.
//! 3. **Collapse runs.** Consecutive variables, and units right after a variable (`KB`, `sec`,
//!    `bytes`, ...), form one variable, so number lists and optional sub-fields
//!    (`12 bytes (1.2 KB)`, `<1 sec`) do not change the template length.
//! 4. **Match** within the bucket of templates of the same length (Drain's first tree level): a
//!    constant must be matched by the same constant, a variable by a variable-looking token; the
//!    most specific fitting template (fewest variables, then oldest) wins. No fit: a new template.
//!
//! Ids are assigned from 1 in order of first appearance and never change or get reused. A
//! template's text only changes when a collapsed variable shows different punctuation in
//! different messages (it then renders as a plain `<*>`).
//!
//! Limitation: a variable with no variable-looking shape (a user name, a service name) is not
//! generalised; each of its values gets its own template. This keeps apart templates that differ
//! by one meaningful word (`... via HTTPS` / `... via SOCKS5`), which a similarity threshold
//! merges.
//!
//! # Bounds
//!
//! At most [`MinerConfig::max_templates`] templates are kept. A message that needs a new template
//! when the table is full first evicts the least-used template (lowest count, then least recently
//! seen, then oldest id), counted in [`MinerStats::templates_evicted_total`]; an evicted id is
//! never reused, so a template that comes back gets a new id. Messages longer than
//! [`MinerConfig::max_tokens`] tokens are mined on their prefix, the rest folded into a trailing
//! variable ([`MinerStats::lines_truncated_total`]).
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
