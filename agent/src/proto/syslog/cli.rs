//! The `mamori-agent parse-syslog` command: syslog messages in, one JSON object per message out.

use std::io::{BufWriter, Read, Write};

use anyhow::Context;
use mamori_models::Timestamp;

use super::framing::{Frame, Framing, StreamFramer};
use super::parser::{DEFAULT_MAX_MESSAGE_BYTES, ParseOptions, TagRule, parse_syslog_frame};

/// Arguments of `parse-syslog`.
#[derive(clap::Args, Debug, Clone)]
pub struct ParseSyslogArgs {
    /// How messages are delimited on input; detected from the first byte when absent
    /// (a digit means octet counting).
    #[arg(long, value_enum)]
    pub framing: Option<Framing>,
    /// Accept RFC 5424 only; other messages are reported as errors.
    #[arg(long)]
    pub strict: bool,
    /// Year for BSD dates without one (default: the current year, or the previous one for a
    /// date more than a month ahead).
    #[arg(long, value_name = "YYYY")]
    pub year: Option<i32>,
    /// Longer messages are cut and flagged `truncated`.
    #[arg(long, default_value_t = DEFAULT_MAX_MESSAGE_BYTES)]
    pub max_message_bytes: usize,
    /// What makes the first word after a BSD header a TAG (the app name): `colon` (`tag:`
    /// only), `marked` (`tag:`, `tag[pid]` or a TAB after it), `word` (any first word, as
    /// rsyslog reads it).
    #[arg(long, value_enum, default_value_t = TagRule::Marked)]
    pub tag: TagRule,
}

const READ_CHUNK_BYTES: usize = 64 * 1024;

/// Reads messages from `input` and writes one JSON line per message, in order: the event's
/// fields with `"ok": true`, or `{"ok": false, "error": ...}` for a message strict mode rejects.
pub fn run(args: &ParseSyslogArgs, mut input: impl Read, output: impl Write) -> anyhow::Result<()> {
    let opts = ParseOptions {
        strict: args.strict,
        year: args.year,
        max_message_bytes: args.max_message_bytes,
        tag: args.tag,
    };
    let mut out = BufWriter::new(output);
    let mut framer = StreamFramer::new(args.framing, args.max_message_bytes);
    let mut chunk = vec![0u8; READ_CHUNK_BYTES];
    let mut frames = Vec::new();
    loop {
        let n = match input.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).context("reading syslog input"),
        };
        framer.push(chunk.get(..n).unwrap_or_default(), &mut frames);
        write_frames(&mut frames, &opts, &mut out)?;
    }
    framer.finish(&mut frames);
    write_frames(&mut frames, &opts, &mut out)?;
    out.flush().context("writing JSON output")?;
    Ok(())
}

fn write_frames(
    frames: &mut Vec<Frame>,
    opts: &ParseOptions,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let received = now();
    for frame in frames.drain(..) {
        let line = match parse_syslog_frame(&frame, received, opts) {
            Ok(ev) => {
                let mut v = serde_json::to_value(mamori_models::Event::Syslog(ev))
                    .context("serialising a syslog event")?;
                if let Some(o) = v.as_object_mut() {
                    o.insert("ok".to_owned(), serde_json::Value::Bool(true));
                }
                v
            }
            Err(e) => serde_json::json!({ "ok": false, "error": e.to_string() }),
        };
        serde_json::to_writer(&mut *out, &line).context("writing JSON output")?;
        out.write_all(b"\n").context("writing JSON output")?;
    }
    Ok(())
}

fn now() -> Timestamp {
    Timestamp::from_system_time(std::time::SystemTime::now())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn one_json_line_per_message() {
        let args = ParseSyslogArgs {
            framing: Some(Framing::Lf),
            strict: true,
            year: Some(2024),
            max_message_bytes: 1024,
            tag: TagRule::Marked,
        };
        let mut out = Vec::new();
        run(&args, &b"<1>1 - - - - - - hi\r\nnot syslog\n"[..], &mut out).unwrap();
        let lines: Vec<serde_json::Value> = out
            .split(|&c| c == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["ok"], true);
        assert_eq!(lines[0]["msg"], "hi");
        assert_eq!(lines[1]["ok"], false);
        assert!(lines[1]["error"].as_str().unwrap().contains("PRI"));
    }
}
