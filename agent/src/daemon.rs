//! `mamori-agent run`: the substation daemon. One pipeline for live capture and the syslog
//! listeners; events go to the shipper (disk spool, mutual TLS to the collector) and/or a
//! local JSON Lines file; Prometheus metrics on their own port. The order of start-up matters:
//! everything that needs privileges (capture sockets, low ports) is opened first, then the
//! process switches user, then the spool is opened (as the unprivileged user).
//!
//! SIGTERM or SIGINT: capture stops, the pipeline ends every flow and reports every waiting
//! request, the listeners stop, events are flushed to the spool, the shipper gets a few
//! seconds to deliver (none when the collector cannot be reached), and the process exits. What was not delivered stays in the spool. A producer waiting for room in a full
//! spool (`when_full = block`) gives up at the signal: the events it held are counted as
//! refused, and a collector that is down never holds the agent past its stop.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context, Result};
use mamori_models::{Event, Timestamp};

use crate::capture::live::{LiveCapture, LiveInput, drop_privileges};
use crate::config::AgentConfig;
use crate::intake::SyslogReceivers;
use crate::metrics::{AgentMetrics, Sources};
use crate::pipeline::Pipeline;
use crate::proto::syslog::ParseOptions;
use crate::ship::{PushOutcome, ShipError, Shipper};

/// How long the shipper may keep delivering after a stop signal.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(5);

/// Where events go: the shipper and/or a local file.
struct Outputs {
    shipper: Option<Shipper>,
    file: Option<Mutex<std::io::BufWriter<std::fs::File>>>,
    /// The stop signal: a producer waiting for room in a full spool gives up once it is set,
    /// or a collector that is down would hold the agent past SIGTERM.
    stop: Arc<AtomicBool>,
    /// Set once an event was refused while stopping (logged once).
    warned_refused: AtomicBool,
}

impl Outputs {
    /// Takes one event from a synchronous context (the capture thread). With a full spool
    /// under `when_full = block`, the capture thread waits (the kernel's ring then absorbs,
    /// and counts, what it must) until the stop signal.
    fn push_blocking(&self, event: &Event) {
        if let Some(s) = &self.shipper {
            self.spooled(s.push_blocking(event, &self.stop));
        }
        self.write_file(event);
    }

    /// Takes one event from an async task (the syslog listeners), waiting for room like
    /// [`Outputs::push_blocking`].
    async fn push(&self, event: &Event) {
        if let Some(s) = &self.shipper {
            self.spooled(s.push_until(event, &self.stop).await);
        }
        self.write_file(event);
    }

    fn spooled(&self, outcome: Result<PushOutcome, ShipError>) {
        match outcome {
            Ok(PushOutcome::Accepted) => {}
            Ok(PushOutcome::Full) => {
                if !self.warned_refused.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "stopping with a full spool: events not spooled are counted in \
                         mamori_agent_spool_events_dropped_total{{reason=\"refused\"}} (logged once)"
                    );
                }
            }
            Err(e) => tracing::error!(error = %e, "spooling an event failed"),
        }
    }

    fn write_file(&self, event: &Event) {
        if let Some(f) = &self.file {
            let mut f = f.lock().unwrap_or_else(PoisonError::into_inner);
            if serde_json::to_writer(&mut *f, event).is_ok() {
                let _ = f.write_all(b"\n");
            }
        }
    }
}

fn now() -> Timestamp {
    Timestamp::from_system_time(std::time::SystemTime::now())
}

/// Runs the daemon until SIGTERM/SIGINT.
pub fn run(config: AgentConfig) -> Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .context("installing signal handlers")?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("mamori-io")
        .enable_all()
        .build()
        .context("starting the async runtime")?;

    // 1. Everything that needs privileges.
    let mut capture = if config.capture.interfaces.is_empty() {
        None
    } else {
        Some(LiveCapture::open(&config.live()).context("opening the capture")?)
    };
    let syslog = match &config.syslog_receivers {
        Some(r) => Some(
            runtime
                .block_on(SyslogReceivers::start(r, ParseOptions::default()))
                .context("starting the syslog listeners")?,
        ),
        None => None,
    };
    let metrics_listener = match config.metrics.listen {
        Some(addr) => Some(
            runtime
                .block_on(tokio::net::TcpListener::bind(addr))
                .with_context(|| format!("binding the metrics endpoint on {addr}"))?,
        ),
        None => None,
    };
    // 2. Drop them.
    if let Some(user) = &config.user {
        drop_privileges(user)
            .map_err(anyhow::Error::msg)
            .context("dropping privileges")?;
        tracing::info!(user = %user, "running unprivileged");
    }
    // 3. The rest runs as the unprivileged user.
    let shipper = match &config.shipper {
        Some(s) => Some({
            let _guard = runtime.enter();
            Shipper::start(s).context("starting the shipper")?
        }),
        None => None,
    };
    let file = match &config.output {
        Some(o) => Some(Mutex::new(std::io::BufWriter::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&o.events_file)
                .with_context(|| {
                    format!("{}: cannot open the events file", o.events_file.display())
                })?,
        ))),
        None => None,
    };
    let pipeline_counters = Arc::new(Mutex::new(Default::default()));
    let sources = Sources {
        pipeline: Arc::clone(&pipeline_counters),
        capture: capture.as_ref().map(LiveCapture::stats),
        shipper: shipper.as_ref().map(Shipper::stats),
        syslog: syslog.as_ref().map(|(r, _)| r.stats_reader()),
    };
    let metrics = Arc::new(AgentMetrics::new(sources).context("registering metrics")?);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    if let Some(l) = metrics_listener {
        runtime.spawn(crate::metrics::serve(
            l,
            {
                let m = Arc::clone(&metrics);
                Arc::new(move || m.render())
            },
            stop_rx.clone(),
        ));
    }
    let outputs = Arc::new(Outputs {
        shipper,
        file,
        stop: Arc::clone(&stop),
        warned_refused: AtomicBool::new(false),
    });

    // Syslog events from the listeners go the same way as the pipeline's.
    let (syslog_handle, syslog_task) = match syslog {
        Some((handle, mut rx)) => {
            let outputs = Arc::clone(&outputs);
            let task = runtime.spawn(async move {
                while let Some(ev) = rx.recv().await {
                    outputs.push(&Event::Syslog(ev)).await;
                }
            });
            (Some(handle), Some(task))
        }
        None => (None, None),
    };
    tracing::info!(
        interfaces = ?config.capture.interfaces,
        syslog = config.syslog_receivers.is_some(),
        shipper = config.shipper.is_some(),
        "agent running"
    );

    // 4. The capture loop (or a wait for the signal).
    let mut pipeline = Pipeline::new(config.pipeline());
    let publish = |p: &Pipeline| {
        *pipeline_counters
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = (p.counters(), p.active_flows());
    };
    {
        let out = Arc::clone(&outputs);
        let mut sink = move |e: Event| out.push_blocking(&e);
        if !config.capture.replay_files.is_empty() {
            let (files, errors) = crate::replay::replay_into(
                &mut pipeline,
                &config.capture.replay_files,
                config.capture.replay_speed,
                Some(&stop),
                &mut sink,
            );
            publish(&pipeline);
            tracing::info!(
                files = files.len(),
                packets = files.iter().map(|f| f.packets).sum::<u64>(),
                unreadable = errors.len(),
                "capture files replayed"
            );
        }
        match capture.as_mut() {
            Some(cap) => {
                let mut last_publish = std::time::Instant::now();
                cap.run(&stop, Duration::from_millis(500), |input| {
                    match input {
                        LiveInput::Frame(pkt) => pipeline.process(pkt, &mut sink),
                        LiveInput::Tick => pipeline.advance_to(now(), &mut sink),
                    }
                    if last_publish.elapsed() >= Duration::from_secs(1) {
                        publish(&pipeline);
                        last_publish = std::time::Instant::now();
                    }
                });
            }
            None => {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
        tracing::info!("stopping");
        pipeline.finish(&mut sink);
        publish(&pipeline);
    }

    // 5. Shut down in order: listeners, then what they queued, then the shipper.
    runtime.block_on(async {
        if let Some(h) = syslog_handle {
            h.shutdown().await;
        }
        if let Some(t) = syslog_task {
            let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
        }
    });
    let _ = stop_tx.send(true);
    let outputs = Arc::try_unwrap(outputs)
        .map_err(|_| anyhow::anyhow!("an event writer outlived shutdown"))?;
    if let Some(f) = &outputs.file {
        f.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .flush()
            .context("writing the events file")?;
    }
    if let Some(s) = outputs.shipper {
        let stats = runtime
            .block_on(s.shutdown(SHUTDOWN_DRAIN))
            .context("stopping the shipper")?;
        tracing::info!(
            acked_batches = stats.batches_acked_total,
            spooled_batches = stats.spool_batches,
            "shipper stopped; undelivered batches stay in the spool"
        );
    }
    runtime.shutdown_timeout(Duration::from_secs(2));
    Ok(())
}
