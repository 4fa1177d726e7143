//! Tokenisation of one log message and the type-based variable classification.
//!
//! A message is cut into *tokens* at whitespace and at structural punctuation (`=`, `:`, `,`,
//! brackets, quotes, ...). Each token keeps the exact separator text in front of it, so a template
//! can be rendered back with the message's own punctuation and spacing (`ambient=<*>`,
//! `Calories:<*>`, `node-<*>` stay as written). Variables are recognised by their shape only
//! (digits, hexadecimal runs, paths, `true`/`false`/`null`, and, as [`Tuning`] says, the values of
//! `key=value` pairs and dotted names): no dataset-specific rules.

use super::tuning::{DottedNames, Tuning};

/// Characters that end a token and are kept, verbatim, in the separator of the next token.
fn is_delimiter(c: char) -> bool {
    c.is_whitespace()
        || matches!(
            c,
            '=' | ','
                | ':'
                | ';'
                | '('
                | ')'
                | '['
                | ']'
                | '{'
                | '}'
                | '"'
                | '\''
                | '|'
                | '#'
                | '@'
        )
}

/// One token of a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Token<'a> {
    /// Separator text between the previous token (or the start) and this one.
    pub sep: &'a str,
    /// The token text itself (never empty, never contains a delimiter).
    pub text: &'a str,
    /// Whether the token looks like a variable by its shape alone.
    pub var: bool,
}

/// A message cut into tokens, with what follows the last token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Tokens<'a> {
    pub tokens: Vec<Token<'a>>,
    /// Separator text after the last token (trailing punctuation, e.g. `)` or `:`); the
    /// untokenised rest when `cut`.
    pub tail: &'a str,
    /// The message had more than the token limit; `tail` holds the rest.
    pub cut: bool,
}

/// Tokens longer than this are variables whatever their shape: such words are data (encoded
/// blobs, hashes, long identifiers), and a constant's text is kept in the template, so this also
/// bounds what one template position stores.
pub(crate) const MAX_CONSTANT_BYTES: usize = 64;

/// Cuts `msg` into tokens. Never fails; an empty or all-punctuation message gives no tokens.
///
/// Variable classification works on whitespace-separated words: in a word that holds a variable
/// part (a digit, a long hex run, a boolean), every piece is a variable except identifier-like
/// keys written `key=` or `key:` (so `ambient=31` keeps `ambient`, while `host.example:80` and
/// `node-7` are variables as a whole).
///
/// At most `limit` tokens are cut; the rest of a longer message is left in `tail` (`cut`), so the
/// work and memory per message stay bounded whatever its length.
pub(crate) fn tokenize<'a>(msg: &'a str, tuning: &Tuning, limit: usize) -> Tokens<'a> {
    let mut tokens = Vec::new();
    let mut sep_start = 0usize;
    let mut text_start: Option<usize> = None;
    // Index in `tokens` of the first token of the current whitespace-separated word.
    let mut word_start = 0usize;
    // Inside `key="..."` (with `kv_values`): the quote that closes the value.
    let mut quoted_value: Option<char> = None;
    let bytes = msg.as_bytes();
    for (i, c) in msg.char_indices() {
        // A run of two or more dots is a leader (`depth.......0`), not part of a word.
        let leader = c == '.'
            && (bytes.get(i + 1) == Some(&b'.') || (i > 0 && bytes.get(i - 1) == Some(&b'.')));
        if leader || is_delimiter(c) {
            if tokens.len() >= limit && text_start.is_some() {
                let tail = msg.get(sep_start..).unwrap_or("");
                classify_word(&mut tokens, word_start);
                return Tokens {
                    tokens,
                    tail,
                    cut: true,
                };
            }
            if let Some(ts) = text_start.take() {
                push(
                    &mut tokens,
                    msg,
                    sep_start,
                    ts,
                    i,
                    tuning,
                    &mut quoted_value,
                );
                sep_start = i;
            }
            if quoted_value == Some(c) {
                quoted_value = None;
            }
            // Words end at whitespace, dot leaders, commas and semicolons; a quoted value is one
            // word whatever it holds.
            if quoted_value.is_none() && (leader || c.is_whitespace() || c == ',' || c == ';') {
                classify_word(&mut tokens, word_start);
                word_start = tokens.len();
            }
        } else if text_start.is_none() {
            text_start = Some(i);
        }
    }
    let mut cut = false;
    if let Some(ts) = text_start {
        if tokens.len() >= limit {
            cut = true;
        } else {
            push(
                &mut tokens,
                msg,
                sep_start,
                ts,
                msg.len(),
                tuning,
                &mut quoted_value,
            );
            sep_start = msg.len();
        }
    }
    classify_word(&mut tokens, word_start);
    Tokens {
        tokens,
        tail: msg.get(sep_start..).unwrap_or(""),
        cut,
    }
}

fn push<'a>(
    tokens: &mut Vec<Token<'a>>,
    msg: &'a str,
    sep_start: usize,
    ts: usize,
    end: usize,
    tuning: &Tuning,
    quoted_value: &mut Option<char>,
) {
    let sep = msg.get(sep_start..ts).unwrap_or("");
    let text = msg.get(ts..end).unwrap_or("");
    let mut var = quoted_value.is_some() || looks_variable(text, tuning);
    if tuning.kv_values && quoted_value.is_none() {
        let key_before = tokens.last().is_some_and(|t| is_identifier(t.text));
        match sep.trim_start() {
            "=" if key_before => var = true,
            "=\"" | "='" if key_before => {
                var = true;
                *quoted_value = sep.chars().last();
            }
            _ => {}
        }
    }
    tokens.push(Token { sep, text, var });
}

/// Spreads variable-ness over the pieces of one word (`tokens[start..]`), sparing keys.
fn classify_word(tokens: &mut [Token<'_>], start: usize) {
    let Some(word) = tokens.get_mut(start..) else {
        return;
    };
    if !word.iter().any(|t| t.var) {
        return;
    }
    let n = word.len();
    for i in 0..n {
        let next_sep = word.get(i + 1).map(|t| t.sep);
        let Some(t) = word.get_mut(i) else { continue };
        if t.var {
            // `r24=...`: a key keeps its name even with digits in it.
            if next_sep.is_some_and(|s| s.starts_with('=')) && is_identifier(t.text) {
                t.var = false;
            }
            continue;
        }
        if !is_key(t.text, next_sep) {
            t.var = true;
        }
    }
}

/// A key in `key=value`, `key:value`, `call(value)`, `name[value]` or `name{value}` (a dotted
/// `host.example:80` is not an identifier, so it stays a variable).
fn is_key(text: &str, next_sep: Option<&str>) -> bool {
    let Some(next) = next_sep.and_then(|s| s.chars().next()) else {
        return false;
    };
    if !is_identifier(text) {
        return false;
    }
    match next {
        '=' => true,
        // `chdir(...)`, `setLightsOn(...)`; an all-caps label glued to a value (`LOCAL(0)`) is
        // more often part of the value.
        '(' | '[' | '{' => text.bytes().any(|b| b.is_ascii_lowercase()),
        ':' => !text.bytes().all(|b| b.is_ascii_hexdigit()),
        _ => false,
    }
}

fn is_identifier(text: &str) -> bool {
    let mut bytes = text.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Shape-based variable test: anything with a decimal digit (numbers, addresses, ids, sizes,
/// times, hex dumps), a long hexadecimal run, a path, a boolean/null literal, a weekday or month
/// name, and (as `dotted_names` says) a name of three or more dotted labels.
pub(crate) fn looks_variable(text: &str, tuning: &Tuning) -> bool {
    if text.starts_with("<*>") || text.len() > MAX_CONSTANT_BYTES {
        return true;
    }
    if text.bytes().any(|b| b.is_ascii_digit()) {
        return true;
    }
    let hex_only = text.len() >= 8 && text.bytes().all(|b| b.is_ascii_hexdigit());
    if hex_only || is_path(text) {
        return true;
    }
    let dotted = match tuning.dotted_names {
        DottedNames::Off => false,
        DottedNames::Lowercase => {
            !text.bytes().any(|b| b.is_ascii_uppercase()) && is_dotted_name(text)
        }
        DottedNames::All => is_dotted_name(text),
    };
    if dotted {
        return true;
    }
    ["true", "false", "null"]
        .iter()
        .any(|w| text.eq_ignore_ascii_case(w))
        || matches!(
            text,
            "Mon"
                | "Tue"
                | "Wed"
                | "Thu"
                | "Fri"
                | "Sat"
                | "Sun"
                | "Jan"
                | "Feb"
                | "Mar"
                | "Apr"
                | "May"
                | "Jun"
                | "Jul"
                | "Aug"
                | "Sep"
                | "Oct"
                | "Nov"
                | "Dec"
        )
}

/// File paths (Unix or Windows), URLs and `package/.Class` component names.
fn is_path(text: &str) -> bool {
    let rooted = ["/", "./", "../", "~/"].iter().any(|p| text.starts_with(p)) && text.len() > 1;
    rooted
        || (text.contains('/') && text.contains('.') && text.len() > 2)
        || (text.contains('\\') && text.len() > 1)
}

/// `host.example.org`, `org.example.Class`: three or more non-empty labels joined by dots (a
/// sentence's final dot does not count).
fn is_dotted_name(text: &str) -> bool {
    let t = text.strip_suffix('.').unwrap_or(text);
    let mut labels = 0usize;
    for label in t.split('.') {
        if label.is_empty()
            || !label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'$')
        {
            return false;
        }
        labels += 1;
    }
    labels >= 3
}

/// Whether `text` is a unit that belongs to the number in front of it (`5 KB`, `<1 sec`).
pub(crate) fn is_unit(text: &str) -> bool {
    matches!(
        text,
        "B" | "KB"
            | "MB"
            | "GB"
            | "TB"
            | "PB"
            | "KiB"
            | "MiB"
            | "GiB"
            | "TiB"
            | "kB"
            | "bytes"
            | "ms"
            | "us"
            | "ns"
            | "s"
            | "sec"
            | "secs"
            | "seconds"
            | "min"
            | "mins"
            | "minutes"
            | "%"
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn keeps_separators_for_rendering() {
        let t = tokenize(
            "ambient=31 Fan speeds ( 1 2 )",
            &Tuning::default(),
            usize::MAX,
        );
        let texts: Vec<_> = t.tokens.iter().map(|t| (t.sep, t.text, t.var)).collect();
        assert_eq!(
            texts,
            vec![
                ("", "ambient", false),
                ("=", "31", true),
                (" ", "Fan", false),
                (" ", "speeds", false),
                (" ( ", "1", true),
                (" ", "2", true),
            ]
        );
        assert_eq!(t.tail, " )");
    }

    fn vars(msg: &str) -> Vec<(&str, bool)> {
        tokenize(msg, &Tuning::default(), usize::MAX)
            .tokens
            .iter()
            .map(|t| (t.text, t.var))
            .collect()
    }

    #[test]
    fn variable_words_and_their_keys() {
        // host:port is a variable as a whole; an identifier key keeps its name.
        assert_eq!(
            vars("proxy.example:5070"),
            vec![("proxy.example", true), ("5070", true)]
        );
        assert_eq!(
            vars("uid=1000 Calories:12"),
            vec![
                ("uid", false),
                ("1000", true),
                ("Calories", false),
                ("12", true)
            ]
        );
        // A key with digits in its name stays a key before `=`.
        assert_eq!(
            vars("r24=0x0ffea4c8"),
            vec![("r24", false), ("0x0ffea4c8", true)]
        );
        assert_eq!(vars("node-233"), vec![("node-233", true)]);
        assert_eq!(
            vars("chdir(/tmp/x)"),
            vec![("chdir", false), ("/tmp/x", true)]
        );
        assert_eq!(vars("LOCAL(0)"), vec![("LOCAL", true), ("0", true)]);
        // Dot leaders separate words.
        assert_eq!(vars("depth.......0"), vec![("depth", false), ("0", true)]);
        assert_eq!(
            vars("true deadbeef00 Fri"),
            vec![("true", true), ("deadbeef00", true), ("Fri", true)]
        );
    }

    #[test]
    fn non_ascii_never_splits_a_character() {
        let t = tokenize("température=21° ..é.. ü", &Tuning::default(), usize::MAX);
        let joined: String = t
            .tokens
            .iter()
            .map(|t| format!("{}{}", t.sep, t.text))
            .collect();
        assert_eq!(format!("{joined}{}", t.tail), "température=21° ..é.. ü");
    }

    #[test]
    fn empty_and_punctuation_only() {
        assert!(
            tokenize("", &Tuning::default(), usize::MAX)
                .tokens
                .is_empty()
        );
        let t = tokenize(" :: ", &Tuning::default(), usize::MAX);
        assert!(t.tokens.is_empty());
        assert_eq!(t.tail, " :: ");
    }

    #[test]
    fn key_value_values_are_variables_whatever_their_shape() {
        assert_eq!(
            vars("rhost=host user=root tty=ssh"),
            vec![
                ("rhost", false),
                ("host", true),
                ("user", false),
                ("root", true),
                ("tty", false),
                ("ssh", true)
            ]
        );
        // A quoted value is one variable, spaces and all; an empty value takes nothing after it.
        assert_eq!(
            vars("tag=\"View Lock\", logname= uid=0"),
            vec![
                ("tag", false),
                ("View", true),
                ("Lock", true),
                ("logname", false),
                ("uid", false),
                ("0", true)
            ]
        );
        let off = Tuning {
            kv_values: false,
            ..Tuning::default()
        };
        let t = tokenize("user=root", &off, usize::MAX);
        assert!(t.tokens.iter().all(|t| !t.var));
    }

    #[test]
    fn host_like_dotted_names_are_variables() {
        let t = Tuning::default();
        assert!(looks_variable("ns.example.com", &t));
        assert!(looks_variable("com.android.phone", &t));
        // Mixed case names code or an event; two labels or a sentence's dot are words.
        assert!(!looks_variable("android.intent.action.SCREEN_ON", &t));
        assert!(!looks_variable("org.apache.hadoop.MRAppMaster", &t));
        assert!(!looks_variable("autopurge.interval", &t));
        assert!(!looks_variable("done.", &t));
        assert!(!looks_variable("a..b.c", &t));
        let all = Tuning {
            dotted_names: DottedNames::All,
            ..t
        };
        assert!(looks_variable("org.apache.hadoop.MRAppMaster", &all));
        let off = Tuning {
            dotted_names: DottedNames::Off,
            ..t
        };
        assert!(!looks_variable("ns.example.com", &off));
    }

    #[test]
    fn windows_paths_and_long_words_are_variables() {
        let t = Tuning::default();
        assert!(looks_variable("\\Windows\\servicing\\sqm", &t));
        assert!(looks_variable(&"x".repeat(MAX_CONSTANT_BYTES + 1), &t));
        assert!(!looks_variable(&"x".repeat(MAX_CONSTANT_BYTES), &t));
    }

    #[test]
    fn token_limit_cuts_and_keeps_the_rest_as_tail() {
        let t = tokenize("a b c d e", &Tuning::default(), 2);
        let texts: Vec<_> = t.tokens.iter().map(|t| t.text).collect();
        assert_eq!(texts, vec!["a", "b"]);
        assert_eq!(t.tail, " c d e");
        assert!(t.cut);
        let t = tokenize("a b", &Tuning::default(), 2);
        assert!(!t.cut);
        let t = tokenize("a b c", &Tuning::default(), 2);
        assert!(t.cut);
        assert_eq!(t.tail, " c");
    }
}
