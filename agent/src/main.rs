//! `mamori-agent`: the command line. `main` parses arguments and calls `run`.

use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

use mamori_agent::pipeline::PipelineConfig;
use mamori_agent::replay::replay_files;

/// Mamori's passive sensor for industrial control networks.
#[derive(Parser, Debug)]
#[command(name = "mamori-agent", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Decode pcap/pcapng files and write events as JSON Lines (one event per line).
    Replay(ReplayArgs),
    /// Parse syslog messages from standard input and write one JSON object per message.
    ParseSyslog(mamori_agent::proto::syslog::cli::ParseSyslogArgs),
}

#[derive(Args, Debug)]
struct ReplayArgs {
    /// Capture files (pcap or pcapng), read in the order given as one continuous capture.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Also recognise Modbus/TCP on this TCP port (repeatable; 502 is always included).
    #[arg(long = "modbus-port", value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    modbus_ports: Vec<u16>,
    /// Also decode syslog in UDP datagrams to this port (repeatable; 514 is always included).
    #[arg(long = "syslog-udp-port", value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    syslog_udp_ports: Vec<u16>,
    /// Also decode syslog on TCP connections to this port when the stream starts like syslog
    /// (repeatable; 514, 601 and 6514 are always included; TLS is skipped).
    #[arg(long = "syslog-tcp-port", value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    syslog_tcp_ports: Vec<u16>,
    /// Write events to this file instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Flows tracked at once; beyond it the least recently active are ended early (counted).
    #[arg(long, default_value_t = 65_536, value_parser = clap::value_parser!(u64).range(1..))]
    max_flows: u64,
    /// Out-of-order bytes held per TCP direction before the hole in front is declared lost.
    #[arg(long, default_value_t = 256 * 1024, value_parser = clap::value_parser!(u64).range(1..))]
    max_stream_buffer_bytes: u64,
    /// Out-of-order bytes held across all TCP connections.
    #[arg(long, default_value_t = 16 * 1024 * 1024, value_parser = clap::value_parser!(u64).range(1..))]
    max_reassembly_bytes: u64,
    /// Idle time after which a TCP connection is ended (capture time).
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    tcp_idle_timeout_seconds: u64,
    /// Idle time after which a UDP or ICMP conversation is ended (capture time).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    udp_idle_timeout_seconds: u64,
    /// How long a Modbus request waits for its response before it is reported unanswered.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    modbus_response_timeout_seconds: u64,
    /// Print the pipeline's counters as JSON on standard error when done.
    #[arg(long)]
    stats: bool,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MAMORI_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mamori-agent: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Replay(args) => replay(args),
        Command::ParseSyslog(args) => {
            mamori_agent::proto::syslog::cli::run(
                &args,
                std::io::stdin().lock(),
                std::io::stdout().lock(),
            )?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn secs(s: u64) -> i64 {
    i64::try_from(s.saturating_mul(1_000_000)).unwrap_or(i64::MAX)
}

fn replay(args: ReplayArgs) -> Result<ExitCode> {
    for f in &args.files {
        std::fs::metadata(f).with_context(|| format!("{}: cannot read", f.display()))?;
    }
    let mut config = PipelineConfig::default();
    for p in &args.modbus_ports {
        if !config.modbus_ports.contains(p) {
            config.modbus_ports.push(*p);
        }
    }
    for p in &args.syslog_udp_ports {
        if !config.syslog_udp_ports.contains(p) {
            config.syslog_udp_ports.push(*p);
        }
    }
    for p in &args.syslog_tcp_ports {
        if !config.syslog_tcp_ports.contains(p) {
            config.syslog_tcp_ports.push(*p);
        }
    }
    config.max_flows = usize::try_from(args.max_flows).unwrap_or(usize::MAX);
    config.stream.max_held_bytes =
        usize::try_from(args.max_stream_buffer_bytes).unwrap_or(usize::MAX);
    config.max_reassembly_bytes = usize::try_from(args.max_reassembly_bytes).unwrap_or(usize::MAX);
    config.tcp_idle_timeout_us = secs(args.tcp_idle_timeout_seconds);
    config.udp_idle_timeout_us = secs(args.udp_idle_timeout_seconds);
    config.icmp_idle_timeout_us = secs(args.udp_idle_timeout_seconds);
    config.modbus.response_timeout_us = secs(args.modbus_response_timeout_seconds);

    let out: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(
            std::fs::File::create(path)
                .with_context(|| format!("{}: cannot create output file", path.display()))?,
        ),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut out = BufWriter::with_capacity(256 * 1024, out);
    let mut write_error: Option<std::io::Error> = None;
    let mut line = Vec::with_capacity(1024);
    let report = replay_files(&args.files, config, &mut |event| {
        if write_error.is_some() {
            return;
        }
        line.clear();
        let r = serde_json::to_writer(&mut line, &event)
            .map_err(std::io::Error::other)
            .and_then(|()| {
                line.push(b'\n');
                out.write_all(&line)
            });
        if let Err(e) = r {
            write_error = Some(e);
        }
    });
    if let Some(e) = write_error {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            return Ok(ExitCode::SUCCESS);
        }
        return Err(e).context("writing events");
    }
    out.flush().context("writing events")?;
    if args.stats {
        eprintln!(
            "{}",
            serde_json::to_string(&report.counters).context("encoding counters")?
        );
    }
    for e in &report.errors {
        eprintln!("mamori-agent: error: {e}");
    }
    Ok(if report.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
