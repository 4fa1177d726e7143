//! `mamori-collector serve` and `check-config`: load the configuration, run the intake until
//! SIGTERM or SIGINT, then stop gracefully (no acknowledged batch is ever lost: a batch is
//! acknowledged only after its commit, and a request cut by the stop is resent by its agent).

use std::path::Path;

use anyhow::Context;

use crate::config::CollectorConfig;
use crate::intake::Collector;

/// `check-config FILE`: every problem at once; nothing opened but the certificate files.
pub fn check_config(path: &Path) -> anyhow::Result<()> {
    CollectorConfig::load(path)?;
    println!("{}: ok", path.display());
    Ok(())
}

/// `serve --config FILE`.
pub fn run(path: &Path) -> anyhow::Result<()> {
    let config = CollectorConfig::load(path)?;
    // A process-wide limit, so checked (and raised) here, not by the library's `start`.
    let descriptors = crate::descriptors::ensure(&config, path)?;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MAMORI_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    match descriptors {
        crate::descriptors::Outcome::Fits { soft, need } => {
            tracing::debug!(?soft, need, "open-file limit fits the configured caps");
        }
        crate::descriptors::Outcome::Raised { from, to, need } => {
            tracing::info!(
                from,
                to,
                need,
                "raised the open-file limit to fit the configured caps"
            );
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("mamori-collector")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(serve(&config))
}

async fn serve(config: &CollectorConfig) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    // Installed before listening, so a signal that comes early is not missed.
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let collector = Collector::start(config).await?;
    let which = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::info!(signal = which, "stopping: finishing requests in progress");
    let stats = collector.shutdown().await?;
    tracing::info!(
        batches_stored = stats.batches_stored_total,
        batches_duplicate = stats.batches_duplicate_total,
        events_stored = stats.events_stored_total,
        "stopped"
    );
    Ok(())
}
