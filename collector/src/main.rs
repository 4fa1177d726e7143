//! `mamori-collector`: offline analysis for now (`templates`).
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
    }
}
