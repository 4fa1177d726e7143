//! `mamori-sim`: run the simulated plant to a pcap, list the scenario library, run the
//! in-process demo, or run a drill (locally or against a deployment).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use mamori_sim::{LIBRARY, PcapFileSink, Plant, PlantConfig, RunEvent, RunOptions};

#[derive(Debug, Parser)]
#[command(
    name = "mamori-sim",
    version,
    about = "A simulated OT plant with attack and fault scenarios"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the plant in real time: normal traffic, then the scenarios one after another.
    Run(RunArgs),
    /// Print the scenario library.
    List,
    /// Everything on this machine: collector, agent and plant in one process; learn, then
    /// play the attacks and faults, and print each incident as it opens. Runs until Ctrl-C
    /// or SIGTERM (or the last scenario, with --exit-after-attacks).
    Demo(DemoArgs),
    /// Run scenarios and report, per scenario, detection, time to detect and time to reach
    /// Alertmanager, with the site marked as exercise.
    Drill(mamori_sim::drill::DrillArgs),
}

#[derive(Debug, clap::Args)]
struct DemoArgs {
    /// Where the database, certificates, API token and spool go (default: a temporary folder,
    /// removed at exit, SIGTERM included).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Plant seconds per real second (learning and scenarios run this much faster). The
    /// default, 5, learns ten minutes of plant time in two: a shorter baseline sees too few
    /// of a tank's levels and flags normal drift.
    #[arg(long, default_value_t = 5.0)]
    speed: f64,
    /// Learning period, seconds of plant time.
    #[arg(long, default_value_t = 600.0)]
    learn_seconds: f64,
    /// Scenarios to run, in order, comma-separated (default: every scenario of the library,
    /// attacks and faults).
    #[arg(long, value_delimiter = ',', value_name = "A,B")]
    scenarios: Vec<String>,
    /// Every scenario's duration, plant seconds (default: its own, at most 30).
    #[arg(long)]
    duration_seconds: Option<f64>,
    /// Normal traffic after each scenario, plant seconds. The collector groups alerts into
    /// incidents within 0.8 of this (event time), so each scenario gets its own.
    #[arg(long, default_value_t = 30.0)]
    gap_seconds: f64,
    /// Normal traffic to watch after learning, before the first scenario, plant seconds
    /// (`--benign-seconds 3600 --scenarios none`: a benign hour, which must open nothing).
    #[arg(long, default_value_t = 0.0)]
    benign_seconds: f64,
    /// Exit once the scenarios have run instead of running until Ctrl-C (the API and metrics
    /// stop with it).
    #[arg(long)]
    exit_after_attacks: bool,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Port of `/metrics` on 127.0.0.1 (a free one if taken).
    #[arg(long, default_value_t = 9103)]
    metrics_port: u16,
    /// Port of the API on 127.0.0.1 (a free one if taken).
    #[arg(long, default_value_t = 9104)]
    api_port: u16,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// The capture to write (classic pcap, Ethernet).
    #[arg(long, default_value = "mamori-sim.pcap")]
    pcap: PathBuf,
    /// The scenario log to write (JSON Lines: name, technique, start, end, expected).
    #[arg(long, default_value = "mamori-sim.scenarios.jsonl")]
    scenario_log: PathBuf,
    /// Normal traffic before the first scenario, seconds (plant time).
    #[arg(long, default_value_t = 600.0)]
    learn_seconds: f64,
    /// Normal traffic after each scenario, seconds (plant time).
    #[arg(long, default_value_t = 60.0)]
    gap_seconds: f64,
    /// Every scenario's duration, seconds (plant time); default: each scenario's own.
    #[arg(long)]
    duration_seconds: Option<f64>,
    /// A scenario to run (repeatable, in order); see `mamori-sim list`.
    #[arg(long = "scenario", value_name = "NAME")]
    scenarios: Vec<String>,
    /// Run the whole library.
    #[arg(long, conflicts_with = "scenarios")]
    all: bool,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Plant seconds per real second: 10 runs every cycle and scenario ten times faster.
    #[arg(long, default_value_t = 1.0)]
    speed: f64,
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::List => {
            list();
            Ok(())
        }
        Command::Run(args) => {
            let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
            runtime.block_on(run(args))
        }
        Command::Demo(args) => {
            let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
            let options = mamori_sim::demo::DemoOptions {
                data_dir: args.data_dir,
                speed: args.speed,
                learn_seconds: args.learn_seconds,
                scenarios: args.scenarios,
                duration_seconds: args.duration_seconds,
                gap_seconds: args.gap_seconds,
                benign_seconds: args.benign_seconds,
                exit_after_attacks: args.exit_after_attacks,
                seed: args.seed,
                metrics_port: args.metrics_port,
                api_port: args.api_port,
            };
            runtime
                .block_on(async { mamori_sim::demo::run(options, stop_signal()).await })
                .map(|_| ())
        }
        Command::Drill(args) => {
            let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
            let report = runtime
                .block_on(async { mamori_sim::drill::run_args(args, stop_signal()).await })?;
            if report.detected < report.total {
                std::process::exit(2);
            }
            Ok(())
        }
    }
}

/// Resolves at Ctrl-C or SIGTERM (a service manager's or `kill`'s stop), so that either ends
/// the run the same way: shut down in order and remove the temporary data folder. The
/// handlers are installed at the call (inside the runtime), before anything is created: a
/// signal during start-up is kept for later, not the default exit that would leave the folder
/// behind. Never resolves for a signal that cannot be watched.
fn stop_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate()).ok();
    let int = signal(SignalKind::interrupt()).ok();
    async move {
        tokio::select! {
            () = received(term) => {}
            () = received(int) => {}
        }
    }
}

/// Resolves when `signal` arrives; never without one.
async fn received(signal: Option<tokio::signal::unix::Signal>) {
    match signal {
        Some(mut s) => {
            s.recv().await;
        }
        None => std::future::pending::<()>().await,
    }
}

fn list() {
    println!(
        "{:<22} {:<7} {:<7} {:>5}  TECHNIQUE",
        "NAME", "CLASS", "ATT&CK", "SECS"
    );
    for s in LIBRARY {
        let class = match s.class {
            mamori_sim::scenario::ScenarioClass::Attack => "attack",
            mamori_sim::scenario::ScenarioClass::Fault => "fault",
        };
        println!(
            "{:<22} {:<7} {:<7} {:>5}  {}",
            s.name, class, s.technique, s.default_duration_s, s.technique_name
        );
        println!("    {}", s.description);
        println!("    expects: {}", s.expected.join(", "));
    }
}

async fn run(args: RunArgs) -> Result<()> {
    let scenarios: Vec<String> = if args.all {
        LIBRARY.iter().map(|s| s.name.to_owned()).collect()
    } else {
        args.scenarios.clone()
    };
    for name in &scenarios {
        if mamori_sim::scenario::find(name).is_none() {
            bail!("unknown scenario {name:?} (see `mamori-sim list`)");
        }
    }
    let config = PlantConfig {
        seed: args.seed,
        speed: args.speed,
        ..PlantConfig::default()
    };
    config.validate().context("plant configuration")?;
    let options = RunOptions {
        learn_s: args.learn_seconds,
        gap_s: args.gap_seconds,
        scenarios,
        duration_s: args.duration_seconds,
    };
    let log_file = File::create(&args.scenario_log)
        .with_context(|| format!("creating {}", args.scenario_log.display()))?;
    let mut log = BufWriter::new(log_file);
    let sink = PcapFileSink::create(&args.pcap).context("creating the capture")?;
    let plant = Plant::start(config, Box::new(sink))
        .await
        .context("starting the plant")?;
    eprintln!(
        "plant running, capture {}, learning {} s",
        args.pcap.display(),
        args.learn_seconds
    );
    let mut log_error: Option<std::io::Error> = None;
    let outcome = tokio::select! {
        r = plant.run(&options, |ev| match ev {
            RunEvent::Started(name) => eprintln!("scenario {name}: starting"),
            RunEvent::Ended(rec) => {
                eprintln!("scenario {}: {} .. {}", rec.name, rec.start, rec.end);
                let line = serde_json::to_string(rec).map_err(std::io::Error::other);
                let written = line.and_then(|l| writeln!(log, "{l}")).and_then(|()| log.flush());
                if let Err(e) = written {
                    log_error.get_or_insert(e);
                }
            }
        }) => r.map(Some),
        _ = tokio::signal::ctrl_c() => Ok(None),
    };
    let stats = plant.shutdown().await.context("stopping the plant")?;
    let records = outcome.context("running the scenarios")?;
    if let Some(e) = log_error {
        return Err(e).with_context(|| format!("writing {}", args.scenario_log.display()));
    }
    eprintln!(
        "done: {} scenarios, {} frames ({} connections, {} datagrams) in {}",
        records.map_or(0, |r| r.len()),
        stats.frames_total,
        stats.connections_total,
        stats.datagrams_total,
        args.pcap.display()
    );
    Ok(())
}
