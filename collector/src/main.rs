//! `mamori-collector`: the batch intake (`serve`, `check-config`), offline analysis
//! (`templates`, `analyze`) and an operator's calls to a running collector (`normal`,
//! `relearn`, `audit`).
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod analyze;
mod operator;
mod templates;

/// Mamori's collector.
#[derive(Debug, Parser)]
#[command(name = "mamori-collector", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Mine log templates: one log message per stdin line in, one JSON line per message out
    /// (`{"template_id": 1, "template": "Received block <*> of size <*>"}`), in input order.
    ///
    /// Pass the message content only (without the syslog or application header: timestamps,
    /// hosts and pids would otherwise become part of every template). Invalid UTF-8 is replaced.
    Templates(TemplatesArgs),
    /// Learn a baseline from events and detect anomalies in other events: alerts as JSON
    /// Lines on stdout, a short summary on stderr.
    ///
    /// `analyze --learn EVENTS... --detect EVENTS... [--baseline-out FILE]` or
    /// `analyze --baseline FILE --detect EVENTS...`. EVENTS are JSON Lines files from
    /// `mamori-agent replay` (or `-` for stdin); they are sorted by time before use.
    Analyze(AnalyzeArgs),
    /// Run the intake server: agents' batches over mutual TLS into the store, until SIGTERM
    /// or SIGINT (docs/collector.md).
    Serve {
        /// The configuration file (see deploy/collector.toml).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Check a configuration file: every problem with its key and reason; exit status 1 if any.
    CheckConfig {
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Mark an alert as normal ("this is normal"): the site's baseline takes the finding in,
    /// and the audit trail records the token's name, the time and the reason. Prints the
    /// audit entry (JSON); exit status 1 with the API's reason when refused.
    Normal(operator::NormalArgs),
    /// Learn one device (`--asset`) or channel (`--channel`) of a detecting site again, from
    /// its next event, while the rest of the site detects.
    Relearn(operator::RelearnArgs),
    /// List the audit trail of alerts marked normal and relearnings, newest first.
    Audit(operator::AuditArgs),
}

#[derive(Debug, clap::Args)]
struct AnalyzeArgs {
    /// Event files to learn the baseline from.
    #[arg(long, value_name = "EVENTS", num_args = 1..)]
    learn: Vec<PathBuf>,
    /// A baseline file written earlier with --baseline-out (instead of --learn).
    #[arg(long, value_name = "FILE")]
    baseline: Option<PathBuf>,
    /// Event files to detect anomalies in.
    #[arg(long, value_name = "EVENTS", num_args = 1..)]
    detect: Vec<PathBuf>,
    /// Where to write the learned baseline (versioned JSON).
    #[arg(long, value_name = "FILE")]
    baseline_out: Option<PathBuf>,
    /// The site name recorded in a learned baseline.
    #[arg(long)]
    site: Option<String>,
    /// Alerts below this severity are counted in the summary but not written.
    #[arg(long, value_enum, default_value_t = MinSeverity::Low)]
    min_severity: MinSeverity,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum MinSeverity {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl From<MinSeverity> for mamori_models::detect::Severity {
    fn from(s: MinSeverity) -> Self {
        use mamori_models::detect::Severity;
        match s {
            MinSeverity::Info => Severity::Info,
            MinSeverity::Low => Severity::Low,
            MinSeverity::Medium => Severity::Medium,
            MinSeverity::High => Severity::High,
            MinSeverity::Critical => Severity::Critical,
        }
    }
}

#[derive(Debug, clap::Args)]
struct TemplatesArgs {
    /// Most templates kept at once; beyond it the least-used template is evicted. Ignored when
    /// `--state` loads a saved miner (its own configuration applies).
    #[arg(long, default_value_t = mamori_models::templates::MinerConfig::default().max_templates)]
    max_templates: usize,
    /// Miner state (JSON) to start from if the file exists, and to write back at the end.
    #[arg(long, value_name = "FILE")]
    state: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mamori-collector: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Templates(args) => templates::run(&args),
        Command::Analyze(args) => analyze::run(&args),
        Command::Serve { config } => mamori_collector::serve::run(&config),
        Command::CheckConfig { file } => mamori_collector::serve::check_config(&file),
        Command::Normal(args) => operator::normal(&args),
        Command::Relearn(args) => operator::relearn(&args),
        Command::Audit(args) => operator::audit(&args),
    }
}
