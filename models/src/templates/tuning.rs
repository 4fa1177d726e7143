//! The miner's few mining parameters, with the one setting used for every log source.

use serde::{Deserialize, Serialize};

/// How the miner tells variables from constants. The default is the setting chosen by
/// cross-validation over the public Loghub sources (`models/tests/miner_cv.rs`: chosen on some
/// sources, scored on the others); it is meant for every source as it is, never to be fitted to
/// one. Kept apart from [`super::MinerConfig`] (the memory bounds an operator sets) for that
/// reason; the evaluation sets it with [`super::TemplateMiner::with_tuning`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Tuning {
    /// The value of a `key=value` pair (also `key="quoted value"`) is a variable whatever its
    /// shape (`user=root`, `tty=ssh`).
    pub kv_values: bool,
    /// Which names of three or more dotted labels are variables.
    pub dotted_names: DottedNames,
    /// A constant position becomes a variable (matching any token from then on) once this many
    /// templates differ from each other at that position only: a word with that many different
    /// values is a parameter (a user, a service name), while two or three words in one place
    /// are usually distinct events (`... via HTTPS` / `... via SOCKS5`). 0 turns merging off.
    pub merge_values: usize,
    /// Merging needs at least this many constant tokens besides the merged position, so short
    /// messages made of a verb and a value (`boot (command 3)`, `running`) keep their words.
    pub merge_min_constants: usize,
    /// Merging at the first position needs this many constants elsewhere (`None`: never). The
    /// first word usually names the event (Drain's first tree level), so it takes more context
    /// to call it a parameter (`<name>: scheduler told me to run this job ...`) than it takes
    /// elsewhere.
    pub first_merge_min_constants: Option<usize>,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            kv_values: true,
            dotted_names: DottedNames::Lowercase,
            merge_values: 3,
            merge_min_constants: 2,
            first_merge_min_constants: Some(4),
        }
    }
}

impl Tuning {
    /// The miner as it was before merging and the optional shapes existed: shape rules only.
    pub fn shapes_only() -> Self {
        Tuning {
            kv_values: false,
            dotted_names: DottedNames::Off,
            merge_values: 0,
            merge_min_constants: 2,
            first_merge_min_constants: None,
        }
    }
}

/// Dotted names (three or more labels joined by dots) taken for variables.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DottedNames {
    /// None: a dotted name is a variable only for another reason (a digit, a path).
    Off,
    /// Lower-case ones, the way host names are written (`ns.example.com`, `com.android.phone`);
    /// mixed-case ones (`org.example.MainClass`, `android.intent.action.SCREEN_ON`) usually name
    /// code or events and stay constants.
    Lowercase,
    /// All of them.
    All,
}
