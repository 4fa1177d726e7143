//! The agent's Prometheus metrics: every name in one place, prefix `mamori_agent_`, base units,
//! `_total` on counters, small bounded label sets. Values are copied from the components'
//! own counters when Prometheus scrapes, so the hot paths only bump plain atomics.

use std::sync::{Arc, Mutex, PoisonError};

use prometheus::{Encoder, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};

use crate::capture::live::LiveStats;
use crate::intake::StatsReader;
use crate::pipeline::Counters;
use crate::ship::ShipStats;

/// What the metrics are read from; each part is optional (a component that is not configured).
#[derive(Default)]
pub struct Sources {
    /// The pipeline's counters, published by the capture thread at every tick.
    pub pipeline: Arc<Mutex<(Counters, usize)>>,
    pub capture: Option<Arc<LiveStats>>,
    pub shipper: Option<Arc<ShipStats>>,
    pub syslog: Option<StatsReader>,
}

impl std::fmt::Debug for Sources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sources").finish_non_exhaustive()
    }
}

/// The registry and the metrics it holds.
#[derive(Debug)]
pub struct AgentMetrics {
    registry: Registry,
    packets: IntCounterVec,
    packets_dropped: IntCounterVec,
    bytes: IntCounterVec,
    events: IntCounterVec,
    decode_problems: IntCounterVec,
    parse_anomalies: IntCounterVec,
    flows_tracked: IntGauge,
    syslog: SyslogMetrics,
    batches: IntCounterVec,
    shipper_events_dropped: IntCounterVec,
    spool_events_accepted: IntCounterVec,
    spool_events_recovered: IntCounterVec,
    spool_events_acked: IntCounterVec,
    spool_events: IntGauge,
    collector_failures: IntCounterVec,
    spool_bytes: IntGauge,
    spool_oldest_age_seconds: IntGauge,
    collector_connection_state: IntGauge,
    sources: Sources,
}

/// Registers a counter vector (the agent and the collector register theirs alike).
pub fn counter(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntCounterVec, prometheus::Error> {
    let c = IntCounterVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

/// Registers a gauge.
pub fn gauge(r: &Registry, name: &str, help: &str) -> Result<IntGauge, prometheus::Error> {
    let g = IntGauge::new(name, help)?;
    r.register(Box::new(g.clone()))?;
    Ok(g)
}

/// Raises a counter to a total read from elsewhere (counters only go up).
pub fn set_total(c: &IntCounterVec, labels: &[&str], total: u64) {
    let m = c.with_label_values(labels);
    let cur = m.get();
    if total > cur {
        m.inc_by(total - cur);
    }
}

/// Sets a gauge from an unsigned reading.
pub fn set_gauge(g: &IntGauge, v: u64) {
    g.set(i64::try_from(v).unwrap_or(i64::MAX));
}

impl AgentMetrics {
    pub fn new(sources: Sources) -> Result<Self, prometheus::Error> {
        let r = Registry::new();
        let build = IntGaugeVec::new(
            Opts::new(
                "mamori_agent_build_info",
                "Build of the running agent (value 1).",
            ),
            &["version"],
        )?;
        r.register(Box::new(build.clone()))?;
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        Ok(AgentMetrics {
            packets: counter(
                &r,
                "mamori_agent_packets_total",
                "Frames processed by the pipeline.",
                &["source"],
            )?,
            packets_dropped: counter(
                &r,
                "mamori_agent_packets_dropped_total",
                "Frames lost before the pipeline, by where.",
                &["reason"],
            )?,
            bytes: counter(
                &r,
                "mamori_agent_bytes_total",
                "Bytes on the wire of the frames processed.",
                &["source"],
            )?,
            events: counter(
                &r,
                "mamori_agent_events_total",
                "Events produced, by type.",
                &["type"],
            )?,
            decode_problems: counter(
                &r,
                "mamori_agent_decode_problems_total",
                "Frames, fragments, flows and stream bytes given up or flagged while decoding, by reason.",
                &["reason"],
            )?,
            parse_anomalies: counter(
                &r,
                "mamori_agent_parse_anomalies_total",
                "Events that carry at least one anomaly flag (malformed or suspicious protocol content), by protocol.",
                &["protocol"],
            )?,
            flows_tracked: gauge(&r, "mamori_agent_flows_tracked", "Flows in the flow table.")?,
            syslog: SyslogMetrics::new(&r)?,
            batches: counter(
                &r,
                "mamori_agent_batches_total",
                "Batches by outcome.",
                &["outcome"],
            )?,
            shipper_events_dropped: counter(
                &r,
                "mamori_agent_spool_events_dropped_total",
                "Events lost on their way to the collector, by reason: full_spool (dropped to make room), rejected (in a batch the collector refused as bad input, set aside), corrupt (in a spooled batch that failed its checks), refused (not taken: the spool was full under when_full = block).",
                &["reason"],
            )?,
            spool_events_accepted: counter(
                &r,
                "mamori_agent_spool_events_accepted_total",
                "Events taken into the spool by this run.",
                &[],
            )?,
            spool_events_recovered: counter(
                &r,
                "mamori_agent_spool_events_recovered_total",
                "Events found in the spool at start (taken by an earlier run, not yet acknowledged).",
                &[],
            )?,
            spool_events_acked: counter(
                &r,
                "mamori_agent_spool_events_acked_total",
                "Events in batches the collector acknowledged (stored).",
                &[],
            )?,
            spool_events: gauge(
                &r,
                "mamori_agent_spool_events",
                "Events in the spool, sealed or in the open batch. accepted + recovered = acked + dropped{full_spool,rejected,corrupt} + this.",
            )?,
            collector_failures: counter(
                &r,
                "mamori_agent_collector_failures_total",
                "Failed exchanges with the collector, by stage: connect (TCP or TLS, or a timeout) and send (a request failed, timed out or was refused).",
                &["stage"],
            )?,
            spool_bytes: gauge(
                &r,
                "mamori_agent_spool_bytes",
                "Bytes of batches waiting in the spool.",
            )?,
            spool_oldest_age_seconds: gauge(
                &r,
                "mamori_agent_spool_oldest_age_seconds",
                "Age of the oldest unacknowledged batch.",
            )?,
            collector_connection_state: gauge(
                &r,
                "mamori_agent_collector_connection_state",
                "Connection to the collector: 0 disconnected, 1 connecting, 2 connected.",
            )?,
            registry: r,
            sources,
        })
    }

    /// Copies the components' counters into the registry and encodes the text format.
    pub fn render(&self) -> String {
        let (c, flows) = self
            .sources
            .pipeline
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        set_total(&self.packets, &["pipeline"], c.packets);
        set_total(&self.bytes, &["pipeline"], c.bytes);
        set_total(&self.events, &["modbus"], c.events_modbus);
        set_total(&self.events, &["flow"], c.events_flow);
        set_total(&self.events, &["syslog"], c.events_syslog);
        for (reason, v) in [
            ("malformed", c.malformed),
            ("unsupported_link", c.unsupported_link),
            ("fragments_table_full", c.fragments_dropped_table_full),
            ("fragments_oversized", c.fragments_dropped_oversized),
            ("fragments_expired", c.fragments_expired),
            ("ipv6_fragments", c.ipv6_fragments),
            ("flows_evicted", c.flows_evicted),
            ("reassembly_limit", c.reassembly_limit_flushes),
            ("tcp_gaps", c.tcp_gaps),
            ("modbus_resynchronisations", c.modbus_resynchronisations),
            ("modbus_pending_overflows", c.modbus_pending_overflows),
            ("syslog_rejected", c.syslog_rejected),
        ] {
            set_total(&self.decode_problems, &[reason], v);
        }
        set_total(
            &self.parse_anomalies,
            &["modbus"],
            c.modbus_events_with_anomalies,
        );
        set_total(
            &self.parse_anomalies,
            &["syslog"],
            c.syslog_events_with_anomalies,
        );
        set_gauge(&self.flows_tracked, flows as u64);
        if let Some(l) = &self.sources.capture {
            use std::sync::atomic::Ordering::Relaxed;
            set_total(&self.packets, &["capture"], l.frames.load(Relaxed));
            set_total(
                &self.packets_dropped,
                &["kernel"],
                l.kernel_drops.load(Relaxed),
            );
            set_total(
                &self.packets_dropped,
                &["queue"],
                l.queue_drops.load(Relaxed),
            );
        }
        if let Some(s) = &self.sources.shipper {
            let s = s.snapshot();
            set_total(&self.batches, &["spooled"], s.batches_spooled_total);
            set_total(&self.batches, &["sent"], s.batches_sent_total);
            set_total(&self.batches, &["acked"], s.batches_acked_total);
            set_total(&self.batches, &["retried"], s.batches_retried_total);
            set_total(&self.batches, &["duplicate"], s.batches_duplicate_total);
            set_total(&self.batches, &["dropped"], s.batches_dropped_total);
            set_total(&self.batches, &["rejected"], s.batches_rejected_total);
            set_total(
                &self.shipper_events_dropped,
                &["full_spool"],
                s.events_dropped_total,
            );
            set_total(
                &self.shipper_events_dropped,
                &["rejected"],
                s.events_rejected_total,
            );
            set_total(
                &self.shipper_events_dropped,
                &["corrupt"],
                s.events_corrupt_total,
            );
            set_total(&self.spool_events_accepted, &[], s.events_accepted_total);
            set_total(&self.spool_events_recovered, &[], s.events_recovered_total);
            set_total(&self.spool_events_acked, &[], s.events_acked_total);
            set_gauge(&self.spool_events, s.spool_events);
            set_total(
                &self.collector_failures,
                &["connect"],
                s.connect_failures_total,
            );
            set_total(&self.collector_failures, &["send"], s.send_failures_total);
            set_total(
                &self.shipper_events_dropped,
                &["refused"],
                s.events_refused_total,
            );
            set_gauge(&self.spool_bytes, s.spool_bytes);
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            let age = if s.oldest_batch_created_unix_ms == 0 {
                0
            } else {
                now_ms.saturating_sub(s.oldest_batch_created_unix_ms) / 1000
            };
            set_gauge(&self.spool_oldest_age_seconds, age);
            set_gauge(&self.collector_connection_state, s.connection_state);
        }
        if let Some(r) = &self.sources.syslog {
            self.syslog.update(r);
        }
        let mut buf = Vec::new();
        if TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .is_err()
        {
            return String::new();
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// The syslog receivers' metrics. Every message read ends delivered or in one reason of
/// `dropped`; datagrams the kernel dropped never reached the receivers and are counted apart:
/// `messages{udp} + kernel_drops` is what was sent to the UDP port.
#[derive(Debug)]
struct SyslogMetrics {
    messages: IntCounterVec,
    delivered: IntCounterVec,
    dropped: IntCounterVec,
    kernel_drops: IntCounterVec,
    queue_bytes: IntGauge,
    queue_events: IntGauge,
    truncated: IntCounterVec,
    framing_errors: IntCounterVec,
    discarded_bytes: IntCounterVec,
    receive_errors: IntCounterVec,
    connections: IntCounterVec,
    connections_refused: IntCounterVec,
    connections_closed: IntCounterVec,
    connections_active: IntGauge,
}

impl SyslogMetrics {
    fn new(r: &Registry) -> Result<Self, prometheus::Error> {
        Ok(SyslogMetrics {
            messages: counter(
                r,
                "mamori_agent_syslog_messages_total",
                "Syslog messages received by the listeners.",
                &["transport"],
            )?,
            delivered: counter(
                r,
                "mamori_agent_syslog_delivered_total",
                "Syslog messages put on the queue to the spool.",
                &[],
            )?,
            dropped: counter(
                r,
                "mamori_agent_syslog_dropped_total",
                "Syslog messages dropped by the listeners, by reason.",
                &["reason"],
            )?,
            kernel_drops: counter(
                r,
                "mamori_agent_syslog_kernel_drops_total",
                "Syslog UDP datagrams the kernel dropped on the listener's socket (receive buffer full) before the listener could read them.",
                &[],
            )?,
            queue_bytes: gauge(
                r,
                "mamori_agent_syslog_queue_bytes",
                "Memory taken by the syslog events waiting in the queue to the spool.",
            )?,
            queue_events: gauge(
                r,
                "mamori_agent_syslog_queue_events",
                "Syslog events waiting in the queue to the spool.",
            )?,
            truncated: counter(
                r,
                "mamori_agent_syslog_truncated_total",
                "Syslog messages cut at max_message_bytes.",
                &[],
            )?,
            framing_errors: counter(
                r,
                "mamori_agent_syslog_framing_errors_total",
                "TCP/TLS syslog stream framing problems, by reason; the stream was resynchronised after each.",
                &["reason"],
            )?,
            discarded_bytes: counter(
                r,
                "mamori_agent_syslog_discarded_bytes_total",
                "Bytes of TCP/TLS syslog streams discarded (past the cut of over-long messages, and length prefixes that could not be right).",
                &[],
            )?,
            receive_errors: counter(
                r,
                "mamori_agent_syslog_receive_errors_total",
                "Errors of the syslog listeners' sockets, by operation.",
                &["operation"],
            )?,
            connections: counter(
                r,
                "mamori_agent_syslog_connections_total",
                "Syslog TCP and TLS connections accepted.",
                &["transport"],
            )?,
            connections_refused: counter(
                r,
                "mamori_agent_syslog_connections_refused_total",
                "Syslog TCP and TLS connections closed at once, by the limit reached.",
                &["reason"],
            )?,
            connections_closed: counter(
                r,
                "mamori_agent_syslog_connections_closed_total",
                "Syslog TCP and TLS connections closed by the agent, by reason.",
                &["reason"],
            )?,
            connections_active: gauge(
                r,
                "mamori_agent_syslog_connections_active",
                "Syslog TCP and TLS connections open.",
            )?,
        })
    }

    fn update(&self, r: &StatsReader) {
        let s = r.stats();
        for (transport, v) in [
            ("udp", s.udp_messages_total),
            ("tcp", s.tcp_messages_total),
            ("tls", s.tls_messages_total),
        ] {
            set_total(&self.messages, &[transport], v);
        }
        set_total(&self.delivered, &[], s.delivered_total);
        for (reason, v) in [
            ("queue_full", s.dropped_queue_full_total),
            ("rate_limited", s.dropped_rate_limited_total),
            ("rejected", s.rejected_total),
            ("closed", s.dropped_closed_total),
        ] {
            set_total(&self.dropped, &[reason], v);
        }
        if let Some(k) = r.udp_kernel_drops() {
            set_total(&self.kernel_drops, &[], k);
        }
        set_gauge(&self.queue_bytes, s.queue_bytes);
        set_gauge(&self.queue_events, s.queue_events);
        set_total(&self.truncated, &[], s.truncated_total);
        set_total(
            &self.framing_errors,
            &["bad_length"],
            s.framer_bad_length_total,
        );
        set_total(&self.discarded_bytes, &[], s.framer_discarded_bytes_total);
        set_total(
            &self.receive_errors,
            &["udp_receive"],
            s.udp_receive_errors_total,
        );
        set_total(&self.receive_errors, &["accept"], s.accept_errors_total);
        set_total(
            &self.connections,
            &["tcp"],
            s.tcp_connections_accepted_total,
        );
        set_total(
            &self.connections,
            &["tls"],
            s.tls_connections_accepted_total,
        );
        set_total(
            &self.connections_refused,
            &["connection_limit"],
            s.connections_refused_total,
        );
        set_total(
            &self.connections_refused,
            &["per_source_limit"],
            s.connections_refused_per_source_total,
        );
        for (reason, v) in [
            ("evicted", s.connections_evicted_total),
            ("idle", s.connections_idle_closed_total),
            ("error", s.connection_errors_total),
            ("tls_handshake", s.tls_handshake_failures_total),
        ] {
            set_total(&self.connections_closed, &[reason], v);
        }
        set_gauge(&self.connections_active, s.connections_active);
    }
}

/// A scrape that takes longer than this is cut (a stuck client holds nothing for long).
const SCRAPE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// Scrapes served at once; more wait in the listen backlog.
const MAX_SCRAPE_CONNECTIONS: usize = 16;

/// Serves `GET /metrics` (the text `render` returns, built off the async threads) on `listener`
/// until `stop` turns true or its sender goes away; open scrapes are then cut. Used by the
/// agent and the collector.
pub async fn serve(
    listener: tokio::net::TcpListener,
    render: Arc<dyn Fn() -> String + Send + Sync>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    use http_body_util::Full;
    use hyper::body::Bytes;
    use hyper::{Request, Response, StatusCode};
    let stopped = async move {
        while !*stop.borrow_and_update() {
            if stop.changed().await.is_err() {
                return;
            }
        }
    };
    tokio::pin!(stopped);
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let conn = tokio::select! {
            c = listener.accept(), if tasks.len() < MAX_SCRAPE_CONNECTIONS => c,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
            () = &mut stopped => break,
        };
        let Ok((stream, _)) = conn else {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            continue;
        };
        let render = Arc::clone(&render);
        tasks.spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let render = Arc::clone(&render);
                async move {
                    let resp = if req.uri().path() == "/metrics" {
                        let body = tokio::task::spawn_blocking(move || render())
                            .await
                            .unwrap_or_default();
                        Response::builder()
                            .header("content-type", "text/plain; version=0.0.4")
                            .body(Full::new(Bytes::from(body)))
                    } else {
                        Response::builder()
                            .status(StatusCode::NOT_FOUND)
                            .body(Full::new(Bytes::from_static(b"not found\n")))
                    };
                    resp.map_err(std::io::Error::other)
                }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let conn = hyper::server::conn::http1::Builder::new().serve_connection(io, service);
            let _ = tokio::time::timeout(SCRAPE_TIMEOUT, conn).await;
        });
    }
    drop(listener);
    tasks.shutdown().await;
}
