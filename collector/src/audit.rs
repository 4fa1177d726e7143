//! The audit trail of operators' changes to what detection takes as normal: an alert marked
//! "this is normal" (`POST /api/v1/alerts/{id}/normal`) and a device or channel relearned
//! (`POST /api/v1/sites/{site}/relearn`). Each entry says who (the API token's name), when,
//! why (the operator's reason) and what changed in the baseline; entries are only ever added.

use serde::{Deserialize, Serialize};

/// Longest reason kept, in bytes: a sentence or a ticket reference, not a document.
pub const MAX_REASON_BYTES: usize = 2000;

/// What an operator did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditAction {
    /// An alert marked as normal: the baseline took the finding in.
    Normal,
    /// A device or channel's part of the baseline learned again.
    Relearn,
}

impl AuditAction {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::Normal => "normal",
            AuditAction::Relearn => "relearn",
        }
    }

    pub fn parse(s: &str) -> Option<AuditAction> {
        match s {
            "normal" => Some(AuditAction::Normal),
            "relearn" => Some(AuditAction::Relearn),
            _ => None,
        }
    }
}

/// One entry of the audit trail.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// 0 until stored.
    pub id: i64,
    pub site: String,
    pub action: AuditAction,
    /// The alert marked normal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert_id: Option<i64>,
    /// The finding (for `normal`): its detector, kind and subject.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detector: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub subject: String,
    /// The API token's name.
    pub who: String,
    /// Wall time, Unix milliseconds.
    pub unix_ms: u64,
    pub reason: String,
    /// What changed: for `normal`, the baseline's changes (`mamori_models::detect::Accepted`);
    /// for `relearn`, the scope and the learning period.
    pub changes: serde_json::Value,
}

/// Checks an operator's reason: some text, at most [`MAX_REASON_BYTES`], no control
/// characters but line breaks and tabs (it is shown in terminals and reports). Returns it
/// trimmed.
pub fn check_reason(reason: &str) -> Result<String, String> {
    let r = reason.trim();
    if r.is_empty() {
        return Err("reason: say why this is normal (it goes to the audit trail)".into());
    }
    if r.len() > MAX_REASON_BYTES {
        return Err(format!("reason: at most {MAX_REASON_BYTES} bytes"));
    }
    if r.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err("reason: no control characters".into());
    }
    Ok(r.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_required_bounded_and_printable() {
        assert_eq!(
            check_reason("  weekly backup job\n").as_deref(),
            Ok("weekly backup job")
        );
        assert!(check_reason("   ").is_err());
        assert!(check_reason(&"x".repeat(MAX_REASON_BYTES + 1)).is_err());
        assert!(check_reason("ok\u{1b}[31m").is_err());
    }
}
