//! `mamori-collector templates`: stdin lines through the template miner to JSON Lines.

use std::fs;
use std::io::{self, BufRead, BufWriter, Read, Write};

use anyhow::Context;
use mamori_models::templates::{MinerConfig, TemplateId, TemplateMiner};
use serde::Serialize;

use crate::TemplatesArgs;

/// One output line.
#[derive(Debug, Serialize)]
struct Output<'a> {
    template_id: TemplateId,
    template: &'a str,
}

pub(crate) fn run(args: &TemplatesArgs) -> anyhow::Result<()> {
    let mut miner = match &args.state {
        Some(path) if path.exists() => {
            let text = fs::read_to_string(path)
                .with_context(|| format!("reading miner state {}", path.display()))?;
            serde_json::from_str::<TemplateMiner>(&text)
                .with_context(|| format!("parsing miner state {}", path.display()))?
        }
        _ => {
            let config = MinerConfig {
                max_templates: args.max_templates,
                ..MinerConfig::default()
            };
            TemplateMiner::new(config).context("checking --max-templates")?
        }
    };
    let stdin = io::stdin();
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    mine_lines(&mut miner, stdin.lock(), &mut out)?;
    out.flush().context("writing to stdout")?;
    if let Some(path) = &args.state {
        let json = serde_json::to_string(&miner).context("serialising miner state")?;
        fs::write(path, json).with_context(|| format!("writing miner state {}", path.display()))?;
    }
    Ok(())
}

/// Longest input line mined; the rest of a longer line is skipped.
const MAX_LINE_BYTES: u64 = 64 * 1024;

fn skip_line<R: BufRead>(input: &mut R) -> anyhow::Result<()> {
    loop {
        let chunk = input.fill_buf().context("reading stdin")?;
        if chunk.is_empty() {
            return Ok(());
        }
        match chunk.iter().position(|b| *b == b'\n') {
            Some(i) => {
                input.consume(i + 1);
                return Ok(());
            }
            None => {
                let len = chunk.len();
                input.consume(len);
            }
        }
    }
}

/// Mines every line of `input` (LF or CRLF endings), writing one JSON line per input line.
fn mine_lines<R: BufRead, W: Write>(
    miner: &mut TemplateMiner,
    mut input: R,
    out: &mut W,
) -> anyhow::Result<u64> {
    let mut buf = Vec::new();
    let mut n = 0u64;
    loop {
        buf.clear();
        let read = (&mut input)
            .take(MAX_LINE_BYTES)
            .read_until(b'\n', &mut buf)
            .context("reading stdin")?;
        if read == 0 {
            return Ok(n);
        }
        if buf.last() != Some(&b'\n') && read as u64 == MAX_LINE_BYTES {
            // Over-long line: mine its first MAX_LINE_BYTES, skip the rest of it.
            skip_line(&mut input)?;
        }
        let line = buf.strip_suffix(b"\n").unwrap_or(&buf);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let text = String::from_utf8_lossy(line);
        let obs = miner.add(&text);
        let record = Output {
            template_id: obs.id,
            template: &obs.template,
        };
        serde_json::to_writer(&mut *out, &record).context("writing to stdout")?;
        out.write_all(b"\n").context("writing to stdout")?;
        n += 1;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn over_long_lines_are_cut_and_the_rest_skipped() {
        let mut miner = TemplateMiner::new(MinerConfig::default()).unwrap();
        let mut input = vec![b'a'; MAX_LINE_BYTES as usize + 10];
        input.extend_from_slice(b"\nnext line\n");
        let mut out = Vec::new();
        assert_eq!(mine_lines(&mut miner, &input[..], &mut out).unwrap(), 2);
        let text = String::from_utf8(out).unwrap();
        assert!(text.lines().nth(1).unwrap().contains("next line"));
    }

    #[test]
    fn one_json_line_per_input_line_in_order() {
        let mut miner = TemplateMiner::new(MinerConfig::default()).unwrap();
        let input = b"unit 1 timeout\r\nunit 22 timeout\nlink up\n\xff bad text 7";
        let mut out = Vec::new();
        let n = mine_lines(&mut miner, &input[..], &mut out).unwrap();
        assert_eq!(n, 4);
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            vec![
                r#"{"template_id":1,"template":"unit <*> timeout"}"#,
                r#"{"template_id":1,"template":"unit <*> timeout"}"#,
                r#"{"template_id":2,"template":"link up"}"#,
                "{\"template_id\":3,\"template\":\"\u{fffd} bad text <*>\"}",
            ]
        );
    }
}
