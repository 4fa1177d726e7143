//! The shipping loop: sends the spool's batches to the collector in sequence order, one at a
//! time, over HTTP/1.1 on mutually authenticated TLS, and deletes each only when the collector
//! acknowledges it. Failures (connect, handshake, request, refusal, timeout) keep the batch
//! and reconnect after an exponential backoff with jitter, except a refusal as bad input
//! (`400`, `413`): no resend can succeed, so that batch is set aside (`rejected/`, counted)
//! and the next one goes. Protocol: `docs/shipping.md`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1;
use hyper::{Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use mamori_wire::{
    AGENT_HEADER, Ack, BATCHES_PATH, CONTENT_ENCODING, CONTENT_TYPE, CREATED_HEADER,
    EVENT_COUNT_HEADER, SEQUENCE_HEADER, SPOOL_ID_HEADER,
};
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;

use super::batch::Batch;
use super::config::{ShipperConfig, TlsMaterial};
use super::stats::{self, CONNECTED, CONNECTING, DISCONNECTED};
use super::{Shared, ShipError, stopped};

/// Cap on the collector's answer.
const MAX_RESPONSE_BYTES: usize = 4096;
/// After this many batches in a row refused as bad input, the collector is taken to be
/// refusing everything (a version mismatch, a bug): batches are then held and retried with
/// backoff instead of set aside, so a broken collector cannot empty the spool.
const MAX_CONSECUTIVE_REJECTIONS: u32 = 8;

/// Whether a refusal says the batch itself can never be accepted: malformed (`400`) or over
/// the collector's size caps (`413`). Anything else (`403` identity, `404`, `5xx`, ...) is
/// about the link or the collector, and a resend may succeed.
fn refused_for_good(status: u16) -> bool {
    matches!(status, 400 | 413)
}

/// The wait before reconnection attempt `failures` (1 after the first failure): `initial`
/// doubled per failure up to `max`, then a random point in its upper half ("equal jitter",
/// so agents that lost the collector together do not come back together).
pub fn backoff_delay(failures: u32, initial: Duration, max: Duration) -> Duration {
    let doublings = failures.saturating_sub(1).min(30);
    let base = initial.saturating_mul(1u32 << doublings).min(max);
    let half = base / 2;
    let jitter_ns = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
    half + Duration::from_nanos(fastrand::u64(0..=jitter_ns))
}

/// Builds the TLS client: only the configured CA is trusted, the agent's certificate is
/// presented, rustls with the `ring` provider.
pub(crate) fn tls_connector(material: TlsMaterial) -> Result<TlsConnector, ShipError> {
    let tls = |e: rustls::Error| ShipError::Tls(e.to_string());
    let mut roots = rustls::RootCertStore::empty();
    for ca in material.roots {
        roots.add(ca).map_err(tls)?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(tls)?
    .with_root_certificates(roots)
    .with_client_auth_cert(material.chain, material.key)
    .map_err(tls)?;
    Ok(TlsConnector::from(Arc::new(config)))
}

type Sender = http1::SendRequest<Full<Bytes>>;

/// One configured connection to the collector.
#[derive(Clone)]
pub(crate) struct Client {
    connector: TlsConnector,
    server_name: ServerName<'static>,
    host: String,
    address: String,
    agent_id: String,
    connect_timeout: Duration,
    request_timeout: Duration,
    idle_timeout: Duration,
    backoff: (Duration, Duration),
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("address", &self.address)
            .field("server_name", &self.server_name)
            .field("agent_id", &self.agent_id)
            .finish_non_exhaustive()
    }
}

/// How a connection ended.
enum SessionEnd {
    /// Nothing to send for `idle_timeout`.
    Idle,
    /// A failure (already counted and logged): back off.
    Failed,
    Shutdown,
}

impl Client {
    pub(crate) fn new(
        config: &ShipperConfig,
        connector: TlsConnector,
    ) -> Result<Client, ShipError> {
        let server_name = ServerName::try_from(config.server_name.clone())
            .map_err(|e| ShipError::Tls(format!("server_name: {e}")))?;
        Ok(Client {
            connector,
            server_name,
            host: config.server_name.clone(),
            address: config.collector_address.clone(),
            agent_id: config.agent_id.clone(),
            connect_timeout: config.connect_timeout(),
            request_timeout: config.request_timeout(),
            idle_timeout: config.idle_timeout(),
            backoff: config.backoff(),
        })
    }

    async fn connect(&self) -> Result<(Sender, JoinHandle<()>), ShipError> {
        let fail = |reason: String| ShipError::Connect {
            address: self.address.clone(),
            reason,
        };
        let handshake = async {
            let tcp = TcpStream::connect(&self.address)
                .await
                .map_err(|e| fail(format!("tcp: {e}")))?;
            let _ = tcp.set_nodelay(true);
            let tls = self
                .connector
                .connect(self.server_name.clone(), tcp)
                .await
                .map_err(|e| fail(format!("tls: {e}")))?;
            let (sender, conn) = http1::handshake(TokioIo::new(tls))
                .await
                .map_err(|e| fail(format!("http: {e}")))?;
            Ok::<_, ShipError>((sender, conn))
        };
        let (sender, conn) = tokio::time::timeout(self.connect_timeout, handshake)
            .await
            .map_err(|_| ShipError::Timeout("connect"))??;
        let task = tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "collector connection closed");
            }
        });
        Ok((sender, task))
    }

    /// Posts one batch and reads the acknowledgement.
    async fn send(
        &self,
        sender: &mut Sender,
        spool_id: &str,
        batch: Batch,
    ) -> Result<Ack, ShipError> {
        let h = &batch.header;
        let request = Request::post(BATCHES_PATH)
            .header(header::HOST, &self.host)
            .header(header::CONTENT_TYPE, CONTENT_TYPE)
            .header(header::CONTENT_ENCODING, CONTENT_ENCODING)
            .header(AGENT_HEADER, &h.agent_id)
            .header(SPOOL_ID_HEADER, spool_id)
            .header(SEQUENCE_HEADER, h.sequence.to_string())
            .header(EVENT_COUNT_HEADER, h.event_count.to_string())
            .header(CREATED_HEADER, h.created_unix_ms.to_string())
            .body(Full::new(Bytes::from(batch.body)))
            .map_err(|e| ShipError::Send(e.to_string()))?;
        let exchange = async {
            sender
                .ready()
                .await
                .map_err(|e| ShipError::Send(e.to_string()))?;
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| ShipError::Send(e.to_string()))?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|e| ShipError::Send(format!("reading the answer: {e}")))?
                .to_bytes();
            Ok::<_, ShipError>((status, body))
        };
        let (status, body) = tokio::time::timeout(self.request_timeout, exchange)
            .await
            .map_err(|_| ShipError::Timeout("request"))??;
        if status != StatusCode::OK {
            let reason: String = String::from_utf8_lossy(&body).chars().take(200).collect();
            return Err(ShipError::Refused {
                status: status.as_u16(),
                reason,
            });
        }
        serde_json::from_slice(&body).map_err(|e| ShipError::Send(format!("bad answer: {e}")))
    }
}

/// Tracks a streak of failures so each streak is logged once (and its end once), and the
/// batches refused in a row as bad input.
#[derive(Debug, Default)]
struct Failures {
    streak: u32,
    rejections: u32,
}

impl Failures {
    fn failed(&mut self, what: &'static str, e: &ShipError) {
        self.streak = self.streak.saturating_add(1);
        if self.streak == 1 {
            tracing::warn!(error = %e, what, "cannot deliver to the collector; batches stay spooled, retrying with backoff");
        } else {
            tracing::debug!(error = %e, what, failures = self.streak, "delivery failed again");
        }
    }

    fn succeeded(&mut self) {
        if self.streak > 0 {
            tracing::info!(failures = self.streak, "delivering to the collector again");
        }
        self.streak = 0;
        self.rejections = 0;
    }
}

/// The task: runs until shutdown.
pub(crate) async fn run(client: Client, shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let mut failures = Failures::default();
    let mut highest_sent: Option<u64> = None;
    let spool_id = shared.spool().id().to_owned();
    loop {
        if *shutdown.borrow() {
            break;
        }
        if shared.spool().oldest().is_none() {
            tokio::select! {
                _ = shared.batch_ready.notified() => continue,
                _ = stopped(&mut shutdown) => break,
            }
        }
        stats::set(&shared.stats.connection_state, CONNECTING);
        let connected = tokio::select! {
            r = client.connect() => r,
            _ = stopped(&mut shutdown) => break,
        };
        let end = match connected {
            Ok((mut sender, conn)) => {
                stats::set(&shared.stats.connection_state, CONNECTED);
                tracing::debug!(address = %client.address, "connected to the collector");
                let end = session(
                    &client,
                    &shared,
                    &spool_id,
                    &mut sender,
                    &mut shutdown,
                    &mut highest_sent,
                    &mut failures,
                )
                .await;
                conn.abort();
                end
            }
            Err(e) => {
                stats::add(&shared.stats.connect_failures, 1);
                failures.failed("connect", &e);
                SessionEnd::Failed
            }
        };
        stats::set(&shared.stats.connection_state, DISCONNECTED);
        match end {
            SessionEnd::Shutdown => break,
            SessionEnd::Idle => {}
            SessionEnd::Failed => {
                let (initial, max) = client.backoff;
                let wait = backoff_delay(failures.streak, initial, max);
                shared.set_retry_at(Some(std::time::Instant::now() + wait));
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stopped(&mut shutdown) => break,
                }
                shared.set_retry_at(None);
            }
        }
    }
    stats::set(&shared.stats.connection_state, DISCONNECTED);
}

/// Sends batches over one connection until it fails, idles out, or shutdown.
async fn session(
    client: &Client,
    shared: &Arc<Shared>,
    spool_id: &str,
    sender: &mut Sender,
    shutdown: &mut watch::Receiver<bool>,
    highest_sent: &mut Option<u64>,
    failures: &mut Failures,
) -> SessionEnd {
    loop {
        // The collector may close a kept-alive connection while it idles: that is no failure,
        // reconnect without backing off.
        if sender.is_closed() {
            return SessionEnd::Idle;
        }
        let Some(seq) = shared.spool().oldest() else {
            tokio::select! {
                _ = shared.batch_ready.notified() => continue,
                _ = tokio::time::sleep(client.idle_timeout) => return SessionEnd::Idle,
                _ = stopped(shutdown) => return SessionEnd::Shutdown,
            }
        };
        let batch = match shared.with_spool(move |s| s.begin_send(seq)).await {
            Ok(Some(b)) => b,
            // Dropped or quarantined meanwhile: take the next.
            Ok(None) => continue,
            Err(e) => {
                tracing::error!(error = %e, sequence = seq, "cannot read a spooled batch");
                return SessionEnd::Failed;
            }
        };
        if highest_sent.is_some_and(|h| seq <= h) {
            stats::add(&shared.stats.batches_retried, 1);
        }
        *highest_sent = (*highest_sent).max(Some(seq));
        stats::add(&shared.stats.batches_sent, 1);
        let result = tokio::select! {
            r = client.send(sender, spool_id, batch) => r,
            _ = stopped(shutdown) => {
                shared.spool().end_send();
                return SessionEnd::Shutdown;
            }
        };
        let ack = match result {
            Ok(ack) if ack.acked == seq => Ok(ack),
            Ok(ack) => Err(ShipError::WrongAck {
                expected: seq,
                acked: ack.acked,
            }),
            Err(e) => Err(e),
        };
        let ack = match ack {
            Ok(ack) => ack,
            Err(ShipError::Refused { status, reason })
                if refused_for_good(status) && failures.rejections < MAX_CONSECUTIVE_REJECTIONS =>
            {
                failures.rejections += 1;
                stats::add(&shared.stats.send_failures, 1);
                let why = format!("{status}: {reason}");
                if let Err(e) = shared.with_spool(move |s| s.reject(seq, &why)).await {
                    tracing::error!(error = %e, sequence = seq, "cannot set a rejected batch aside");
                    return SessionEnd::Failed;
                }
                shared.space_freed.notify_waiters();
                // The collector closes the connection after a refusal: reconnect at once.
                return SessionEnd::Idle;
            }
            Err(e) => {
                shared.spool().end_send();
                stats::add(&shared.stats.send_failures, 1);
                failures.failed("send", &e);
                return SessionEnd::Failed;
            }
        };
        match shared.with_spool(move |s| s.ack(seq)).await {
            Ok(_) => {}
            Err(e) => {
                // The collector has it; deleting failed. It will be resent and deduplicated.
                tracing::error!(error = %e, sequence = seq, "cannot delete an acknowledged batch");
                return SessionEnd::Failed;
            }
        }
        stats::add(&shared.stats.batches_acked, 1);
        if ack.duplicate {
            stats::add(&shared.stats.batches_duplicate, 1);
        }
        failures.succeeded();
        shared.space_freed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_is_capped_and_jittered_in_the_upper_half() {
        let (initial, max) = (Duration::from_millis(100), Duration::from_secs(2));
        for failures in 1..40u32 {
            let base = (initial * 2u32.pow(failures.saturating_sub(1).min(20))).min(max);
            for _ in 0..50 {
                let d = backoff_delay(failures, initial, max);
                assert!(d >= base / 2 && d <= base, "{failures}: {d:?} vs {base:?}");
            }
        }
        assert!(backoff_delay(u32::MAX, initial, max) <= max);
    }
}
