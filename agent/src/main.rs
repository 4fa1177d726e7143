//! `mamori-agent`: the command line. `main` parses arguments and calls `run`.

use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

use mamori_agent::pipeline::PipelineConfig;
use mamori_agent::replay::replay_files_paced;

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
    ///
    /// A corrupt record does not end a file: reading goes on at the next record that can be
    /// believed, a warning per file says where, and --stats counts what was skipped. Exits 1
    /// when a file cannot be opened, is not a capture, ends inside a record (truncated) or
    /// holds corruption and no readable packet; everything before was still decoded.
    Replay(ReplayArgs),
    /// Capture live on network interfaces (needs CAP_NET_RAW) and write events as JSON Lines
    /// until SIGINT/SIGTERM; the sockets only receive.
    Capture(CaptureArgs),
    /// Run as the substation daemon with the configuration file (capture, syslog listeners,
    /// shipping, metrics) until SIGTERM/SIGINT.
    Run {
        /// The configuration file (TOML); see deploy/agent.toml.
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Check a configuration file: every problem is reported (file, key, reason); exits
    /// non-zero when there is one. Reads the certificate files it names; opens no socket or
    /// capture and writes nothing.
    CheckConfig {
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Parse syslog messages from standard input and write one JSON object per message.
    ParseSyslog(mamori_agent::proto::syslog::cli::ParseSyslogArgs),
}

#[derive(Args, Debug)]
struct CaptureArgs {
    /// Interface to capture on (repeatable: one pipeline sees them all).
    #[arg(short, long = "interface", required = true, value_name = "NAME")]
    interfaces: Vec<String>,
    /// Do not put the interfaces in promiscuous mode.
    #[arg(long)]
    no_promiscuous: bool,
    /// Kernel filter: only the Modbus and syslog ports (default: every IP frame, so that flows
    /// of every conversation are seen).
    #[arg(long)]
    configured_ports_only: bool,
    /// Switch to this user once the capture sockets are open.
    #[arg(long, value_name = "USER")]
    user: Option<String>,
    /// Stop after this many seconds (default: run until SIGINT/SIGTERM).
    #[arg(long, value_name = "SECONDS")]
    duration_seconds: Option<u64>,
    /// Ring memory per interface.
    #[arg(long, default_value_t = 4 * 1024 * 1024)]
    ring_bytes: usize,
    #[command(flatten)]
    decode: DecodeArgs,
}

#[derive(Args, Debug)]
struct ReplayArgs {
    /// Capture files (pcap or pcapng), read in the order given as one continuous capture.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Replay at the recorded pace (frame gaps are slept), for drills and demos.
    #[arg(long)]
    realtime: bool,
    /// With --realtime: how many times faster than recorded (0.5 = half speed).
    #[arg(long, default_value_t = 1.0, requires = "realtime", value_parser = parse_speed)]
    speed: f64,
    #[command(flatten)]
    decode: DecodeArgs,
}

fn parse_speed(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v <= 1e6 => Ok(v),
        _ => Err(format!("{s:?} is not a speed factor in (0, 1000000]")),
    }
}

/// Decoding options shared by `replay` and `capture`.
#[derive(Args, Debug)]
struct DecodeArgs {
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
        Command::Capture(args) => capture(args),
        Command::Run { config } => {
            let config = mamori_agent::config::AgentConfig::load(&config)?;
            mamori_agent::daemon::run(config)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckConfig { file } => match mamori_agent::config::AgentConfig::load(&file) {
            Ok(_) => {
                println!("{}: ok", file.display());
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("{e}");
                Ok(ExitCode::from(1))
            }
        },
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
    let config = args.decode.pipeline_config();
    let mut output = EventWriter::open(args.decode.output.as_deref())?;
    let speed = args.realtime.then_some(args.speed);
    let report = replay_files_paced(&args.files, config, speed, &mut |event| {
        output.write(&event)
    });
    if output.finish()? {
        return Ok(ExitCode::SUCCESS); // the reader went away (broken pipe)
    }
    if args.decode.stats {
        let mut v = serde_json::to_value(&report.counters).context("encoding counters")?;
        let files = report.file_totals();
        if let Some(o) = v.as_object_mut() {
            o.insert("file_corrupt_records".into(), files.corrupt_records.into());
            o.insert(
                "file_resynchronisations".into(),
                files.resynchronisations.into(),
            );
            o.insert("file_skipped_bytes".into(), files.skipped_bytes.into());
        }
        eprintln!("{v}");
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

fn capture(args: CaptureArgs) -> Result<ExitCode> {
    use mamori_agent::capture::live::{
        CaptureFilter, LiveCapture, LiveConfig, LiveInput, drop_privileges,
    };
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let config = args.decode.pipeline_config();
    let filter = if args.configured_ports_only {
        let mut tcp = config.modbus_ports.clone();
        tcp.extend(&config.syslog_tcp_ports);
        CaptureFilter::Ports {
            tcp,
            udp: config.syslog_udp_ports.clone(),
        }
    } else {
        CaptureFilter::AllIp
    };
    let live = LiveConfig {
        interfaces: args.interfaces.clone(),
        promiscuous: !args.no_promiscuous,
        filter,
        ring_bytes: args.ring_bytes,
        ..LiveConfig::default()
    };
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .context("installing signal handlers")?;
    }
    let mut cap = LiveCapture::open(&live).context("opening the capture")?;
    if let Some(user) = &args.user {
        drop_privileges(user)
            .map_err(anyhow::Error::msg)
            .context("dropping privileges")?;
        tracing::info!(user = %user, "running unprivileged");
    }
    let mut output = EventWriter::open(args.decode.output.as_deref())?;
    let mut pipeline = mamori_agent::pipeline::Pipeline::new(config);
    if let Some(secs) = args.duration_seconds {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_secs(secs));
            stop.store(true, Ordering::Relaxed);
        });
    }
    let wall_now = || mamori_models::Timestamp::from_system_time(std::time::SystemTime::now());
    let mut sink = |event: mamori_models::Event| output.write(&event);
    cap.run(
        &stop,
        std::time::Duration::from_millis(500),
        |input| match input {
            LiveInput::Frame(pkt) => pipeline.process(pkt, &mut sink),
            LiveInput::Tick => {
                pipeline.advance_to(wall_now(), &mut sink);
            }
        },
    );
    pipeline.advance_to(wall_now(), &mut sink);
    pipeline.finish(&mut sink);
    let stats = cap.stats();
    if output.finish()? {
        return Ok(ExitCode::SUCCESS);
    }
    if args.decode.stats {
        let mut v = serde_json::to_value(pipeline.counters()).context("encoding counters")?;
        if let Some(o) = v.as_object_mut() {
            o.insert(
                "capture_frames".into(),
                stats.frames.load(Ordering::Relaxed).into(),
            );
            o.insert(
                "capture_queue_drops".into(),
                stats.queue_drops.load(Ordering::Relaxed).into(),
            );
            o.insert(
                "kernel_packets".into(),
                stats.kernel_packets.load(Ordering::Relaxed).into(),
            );
            o.insert(
                "kernel_drops".into(),
                stats.kernel_drops.load(Ordering::Relaxed).into(),
            );
        }
        eprintln!("{v}");
    }
    Ok(ExitCode::SUCCESS)
}

/// JSON Lines to a file or standard output. A write error is kept and reported once at the
/// end; a broken pipe (the reader went away) ends output quietly.
struct EventWriter {
    out: BufWriter<Box<dyn Write>>,
    line: Vec<u8>,
    error: Option<std::io::Error>,
}

impl EventWriter {
    fn open(path: Option<&std::path::Path>) -> Result<Self> {
        let out: Box<dyn Write> = match path {
            Some(path) => Box::new(
                std::fs::File::create(path)
                    .with_context(|| format!("{}: cannot create output file", path.display()))?,
            ),
            None => Box::new(std::io::stdout().lock()),
        };
        Ok(EventWriter {
            out: BufWriter::with_capacity(256 * 1024, out),
            line: Vec::with_capacity(1024),
            error: None,
        })
    }

    fn write(&mut self, event: &mamori_models::Event) {
        if self.error.is_some() {
            return;
        }
        self.line.clear();
        let r = serde_json::to_writer(&mut self.line, event)
            .map_err(std::io::Error::other)
            .and_then(|()| {
                self.line.push(b'\n');
                self.out.write_all(&self.line)
            });
        if let Err(e) = r {
            self.error = Some(e);
        }
    }

    /// Flushes; `Ok(true)` when output stopped because the reader went away.
    fn finish(mut self) -> Result<bool> {
        if let Some(e) = self.error.take() {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                return Ok(true);
            }
            return Err(e).context("writing events");
        }
        match self.out.flush() {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(true),
            r => r.map(|()| false).context("writing events"),
        }
    }
}

impl DecodeArgs {
    fn pipeline_config(&self) -> PipelineConfig {
        let args = self;
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
        config.max_reassembly_bytes =
            usize::try_from(args.max_reassembly_bytes).unwrap_or(usize::MAX);
        config.tcp_idle_timeout_us = secs(args.tcp_idle_timeout_seconds);
        config.udp_idle_timeout_us = secs(args.udp_idle_timeout_seconds);
        config.icmp_idle_timeout_us = secs(args.udp_idle_timeout_seconds);
        config.modbus.response_timeout_us = secs(args.modbus_response_timeout_seconds);

        config
    }
}
