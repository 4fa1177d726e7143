//! A JSON webhook for SOAR and chat bridges: `POST {url}` with
//! `{"version": 2, "event": "opened|updated|resolved", "notice": {...}}`, signed so the
//! receiver can tell it came from this collector and was not replayed later:
//!
//! - `X-Mamori-Timestamp`: Unix seconds when the attempt was made;
//! - `X-Mamori-Signature`: `sha256=` and the hex HMAC-SHA256, keyed with the shared secret,
//!   of `timestamp + "." + body`.
//!
//! Each attempt is signed afresh, so a receiver may refuse timestamps older than a few
//! minutes without refusing retries.

use std::sync::Arc;

use bytes::Bytes;
use hmac::{Hmac, Mac};
use hyper::header::{HeaderName, HeaderValue};
use serde::Serialize;
use sha2::Sha256;

use super::config::{Secret, WebhookSection, load_roots, load_secret};
use super::http::{HttpTarget, tls_connector};
use super::queue::{Policy, Queue, SinkStats, deliver};
use super::{Delivery, Event, Notice, NotifyError, Sink, SinkHandle};

/// The payload's `version`. 2: the notice's `detector` (the first of a sorted set, not a
/// lead) became `detectors`, the whole set.
pub const PAYLOAD_VERSION: u32 = 2;
/// Unix seconds of the attempt.
pub const TIMESTAMP_HEADER: &str = "x-mamori-timestamp";
/// `sha256=<hex>`.
pub const SIGNATURE_HEADER: &str = "x-mamori-signature";
/// `opened`, `updated` or `resolved` (also in the body), for routing without parsing.
pub const EVENT_HEADER: &str = "x-mamori-event";

type HmacSha256 = Hmac<Sha256>;

#[derive(Serialize)]
struct Payload<'a> {
    version: u32,
    event: Event,
    notice: &'a Notice,
}

/// The JSON body for `notice`.
pub fn render_payload(event: Event, notice: &Notice) -> Vec<u8> {
    let payload = Payload {
        version: PAYLOAD_VERSION,
        event,
        notice,
    };
    // Strings, numbers and options: serialising cannot fail.
    serde_json::to_vec(&payload).unwrap_or_default()
}

fn mac(secret: &[u8], timestamp: &str, body: &[u8]) -> Option<HmacSha256> {
    // HMAC accepts keys of any length: this never fails.
    let mut mac = HmacSha256::new_from_slice(secret).ok()?;
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    Some(mac)
}

/// `sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>`.
pub fn signature(secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    let mut out = String::from("sha256=");
    if let Some(mac) = mac(secret, timestamp, body) {
        for b in mac.finalize().into_bytes() {
            out.push_str(&format!("{b:02x}"));
        }
    }
    out
}

/// For receivers (and tests): whether `header` is the signature of `timestamp` and `body`,
/// compared in constant time.
pub fn verify_signature(secret: &[u8], timestamp: &str, body: &[u8], header: &str) -> bool {
    let Some(hex) = header.strip_prefix("sha256=") else {
        return false;
    };
    let Some(tag) = decode_hex(hex) else {
        return false;
    };
    mac(secret, timestamp, body).is_some_and(|m| m.verify_slice(&tag).is_ok())
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let digit = |c: u8| {
        char::from(c)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    };
    s.as_bytes()
        .chunks(2)
        .map(|pair| match pair {
            [hi, lo] => Some(digit(*hi)? << 4 | digit(*lo)?),
            _ => None,
        })
        .collect()
}

/// The webhook sink, built and not yet running.
#[derive(Debug)]
pub(crate) struct Runner {
    target: HttpTarget,
    secret: Secret,
    policy: Policy,
    capacity: usize,
}

impl Runner {
    pub(crate) fn build(section: &WebhookSection) -> Result<Runner, NotifyError> {
        let delivery = section.delivery();
        let connector = match &section.ca_file {
            Some(path) => Some(tls_connector(
                load_roots(path).map_err(NotifyError::Invalid)?,
            )?),
            None => None,
        };
        let target = HttpTarget::new(
            &section.url,
            "",
            connector.as_ref(),
            delivery.timeout(),
            Vec::new(),
        )?;
        Ok(Runner {
            target,
            secret: load_secret(&section.secret_file).map_err(NotifyError::Invalid)?,
            policy: Policy::from_settings(&delivery),
            capacity: delivery.capacity(),
        })
    }

    pub(crate) fn spawn(
        self,
        runtime: &tokio::runtime::Handle,
    ) -> (SinkHandle, tokio::task::JoinHandle<()>) {
        let stats = Arc::new(SinkStats::new(Sink::Webhook));
        let input = Arc::new(Queue::new(self.capacity));
        let handle = SinkHandle {
            stats: stats.clone(),
            input: input.clone(),
            posts: Vec::new(),
        };
        (handle, runtime.spawn(run(self, input, stats)))
    }
}

async fn run(runner: Runner, input: Arc<Queue<Arc<Delivery>>>, stats: Arc<SinkStats>) {
    while let Some(d) = input.next().await {
        if input.len() == 0 {
            stats.drained();
        }
        let body = Bytes::from(render_payload(d.event, &d.notice));
        let event = HeaderValue::from_static(d.event.as_str());
        let target = &runner.target;
        let secret = runner.secret.expose().as_bytes();
        deliver(&stats, runner.policy, target.url(), 1, || {
            let body = body.clone();
            let timestamp = (super::unix_ms_now() / 1000).to_string();
            let headers = [
                (
                    HeaderName::from_static(SIGNATURE_HEADER),
                    header_value(&signature(secret, &timestamp, &body)),
                ),
                (
                    HeaderName::from_static(TIMESTAMP_HEADER),
                    header_value(&timestamp),
                ),
                (HeaderName::from_static(EVENT_HEADER), event.clone()),
            ];
            async move {
                target
                    .post(body, &headers)
                    .await
                    .map_err(|e| (e.retry(), e))
            }
        })
        .await;
    }
}

fn header_value(s: &str) -> HeaderValue {
    // Digits, `sha256=` and hex only.
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::notify::tests::notice;

    #[test]
    fn hmac_sha256_matches_rfc_4231_test_case_2() {
        // RFC 4231 §4.3: key "Jefe", data "what do ya want for nothing?".
        let mut m = HmacSha256::new_from_slice(b"Jefe").unwrap();
        m.update(b"what do ya want for nothing?");
        let hex: String = m
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn the_signature_covers_timestamp_dot_body() {
        // Expected value from OpenSSL:
        // printf '1700000000.{"version":1}' | openssl dgst -sha256 -hmac Jefe
        let (secret, body) = (b"Jefe", b"{\"version\":1}");
        let sig = signature(secret, "1700000000", body);
        assert_eq!(
            sig,
            "sha256=11c6a57e329385bb25185175112f9105b5e1927c400fbcc7bc64da526d7232c5"
        );
        assert!(verify_signature(secret, "1700000000", body, &sig));
        assert!(!verify_signature(secret, "1700000001", body, &sig));
        assert!(!verify_signature(b"other", "1700000000", body, &sig));
        assert!(!verify_signature(secret, "1700000000", body, "sha256=zz"));
        assert!(!verify_signature(secret, "1700000000", body, &sig[7..]));
        assert!(!verify_signature(secret, "1700000000", body, &sig[..20]));
    }

    #[test]
    fn the_payload_is_versioned_and_carries_the_notice() {
        let body = render_payload(Event::Updated, &notice("plant-a/17"));
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["version"], 2);
        assert_eq!(v["notice"]["detectors"], serde_json::json!(["allowlist"]));
        assert_eq!(v["event"], "updated");
        assert_eq!(v["notice"]["key"], "plant-a/17");
        assert_eq!(v["notice"]["severity"], "high");
        assert_eq!(v["notice"]["ends_at_unix_ms"], serde_json::Value::Null);
        assert_eq!(v["notice"]["exercise"], false);
    }
}
