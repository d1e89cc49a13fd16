//! `attnflow bench generate`: a decoder in attnflow and in Hugging Face
//! transformers (float32) on the same token ids, the sides taking turns
//! round by round:
//!
//! * **prefill**: one forward pass over a prompt of `prompt_tokens` tokens
//!   with every layer's attention map kept (transformers: eager attention,
//!   `output_attentions=True`, last position's logits only);
//! * **decode**: `decode_tokens` greedy steps of one token through the
//!   key/value cache after a short prompt (transformers: its default
//!   attention), steps only timed.
//!
//! Each case reports both sides per round, the median ratio with its
//! min–max, and whether the two sides agreed (the prefill's next token,
//! the decoded tokens).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Instant;

use serde::Serialize;

use attnflow_models::decoder::generate::argmax;
use attnflow_models::decoder::model::{ForwardOptions, LogitRows};
use attnflow_models::{ModelError, PretrainedDecoder, Result};

use crate::protocol::{Machine, Spread};

/// The transformers side, embedded so the binary needs no source tree.
pub const PEER_SCRIPT: &str = include_str!("../peers/generate_transformers.py");

/// Settings of the benchmark.
#[derive(Clone, Debug, Serialize)]
pub struct GenerateBenchConfig {
    /// The decoder (directory or GGUF file).
    pub model: PathBuf,
    /// Tokens of the prefill prompt.
    pub prompt_tokens: usize,
    /// Tokens of the decode prompt.
    pub decode_prompt_tokens: usize,
    /// Greedy steps timed in the decode case.
    pub decode_tokens: usize,
    /// Timed rounds per side (after one untimed warm-up round).
    pub rounds: usize,
    /// The Python interpreter with transformers; `None` runs attnflow alone.
    pub python: Option<PathBuf>,
    /// Threads for PyTorch (attnflow uses its rayon pool).
    pub threads: usize,
}

/// One case: per-round figures of both sides and their ratio.
#[derive(Clone, Debug, Serialize)]
pub struct CaseReport {
    /// `prefill` or `decode`.
    pub name: String,
    /// What the figures count (`ms` or `tokens/s`).
    pub unit: String,
    /// attnflow's figure per round.
    pub attnflow: Vec<f64>,
    /// The peer's figure per round (empty without a peer).
    pub peer: Vec<f64>,
    /// attnflow's advantage per round (time ratio peer/attnflow for
    /// `ms`, throughput ratio attnflow/peer for `tokens/s`).
    pub ratios: Vec<f64>,
    /// The median ratio with its min and max.
    pub ratio: Option<Spread>,
    /// Whether the sides agreed on what they computed.
    pub agreement: Option<String>,
}

/// The result of [`bench_generate`].
#[derive(Clone, Debug, Serialize)]
pub struct GenerateBenchReport {
    /// The settings.
    pub config: GenerateBenchConfig,
    /// The machine.
    pub machine: Machine,
    /// The peer's versions and threads, or why it did not run.
    pub peer: serde_json::Value,
    /// Peak resident memory of the attnflow process, bytes.
    pub attnflow_peak_bytes: Option<u64>,
    /// The prefill and decode cases.
    pub cases: Vec<CaseReport>,
}

impl GenerateBenchReport {
    /// The report as text: the machine, then each case's figures per round,
    /// the median ratio with its range, and whether the sides agreed.
    pub fn to_text(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        out.push_str(&self.machine.to_text());
        let _ = writeln!(
            out,
            "model: {} · prefill {} tokens with every attention map kept · decode {} greedy tokens after {}",
            self.config.model.display(),
            self.config.prompt_tokens,
            self.config.decode_tokens,
            self.config.decode_prompt_tokens
        );
        if self.peer["status"] != "measured" {
            let _ = writeln!(
                out,
                "transformers: {}",
                self.peer["reason"].as_str().unwrap_or("skipped")
            );
        }
        for case in &self.cases {
            let list = |values: &[f64]| {
                values
                    .iter()
                    .map(|value| format!("{value:.1}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            let _ = writeln!(out);
            let _ = writeln!(
                out,
                "{} ({}), {} rounds",
                case.name,
                case.unit,
                case.attnflow.len()
            );
            let _ = writeln!(out, "  attnflow      {}", list(&case.attnflow));
            if !case.peer.is_empty() {
                let _ = writeln!(out, "  transformers  {}", list(&case.peer));
            }
            if let Some(ratio) = &case.ratio {
                let _ = writeln!(
                    out,
                    "  attnflow ahead by {:.2}× (median; {:.2}–{:.2})",
                    ratio.median, ratio.min, ratio.max
                );
            }
            if let Some(agreement) = &case.agreement {
                let _ = writeln!(out, "  {agreement}");
            }
        }
        if let Some(bytes) = self.attnflow_peak_bytes {
            let _ = writeln!(out);
            let _ = writeln!(out, "attnflow peak memory {:.0} MB", bytes as f64 / 1e6);
        }
        out
    }
}

/// The transformers process, driven one JSON line at a time.
struct Peer {
    child: Child,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
}

impl Peer {
    fn start(
        python: &Path,
        model: &Path,
        threads: usize,
    ) -> std::result::Result<(Self, serde_json::Value), String> {
        let mut child = Command::new(python)
            .arg("-c")
            .arg(PEER_SCRIPT)
            .env("OMP_NUM_THREADS", threads.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|error| format!("cannot start {}: {error}", python.display()))?;
        let input = child.stdin.take().expect("piped stdin");
        let output = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut peer = Self {
            child,
            input,
            output,
        };
        let loaded = peer.ask(&serde_json::json!({"load": {"path": model, "threads": threads}}))?;
        Ok((peer, loaded))
    }

    fn ask(
        &mut self,
        command: &serde_json::Value,
    ) -> std::result::Result<serde_json::Value, String> {
        writeln!(self.input, "{command}").map_err(|error| format!("peer stopped: {error}"))?;
        self.input
            .flush()
            .map_err(|error| format!("peer stopped: {error}"))?;
        let mut line = String::new();
        self.output
            .read_line(&mut line)
            .map_err(|error| format!("peer stopped: {error}"))?;
        let answer: serde_json::Value = serde_json::from_str(&line)
            .map_err(|_| format!("peer said {line:?} (is transformers installed?)"))?;
        match answer.get("error") {
            Some(error) => Err(error.as_str().unwrap_or("failed").to_string()),
            None => Ok(answer),
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = writeln!(self.input, "{{\"quit\": true}}");
        let _ = self.input.flush();
        let _ = self.child.wait();
    }
}

/// attnflow's prefill with every map kept: seconds and the next token.
fn prefill_once(decoder: &PretrainedDecoder, ids: &[u32]) -> Result<(f64, u32)> {
    let mut cache = decoder.model.cache(ids.len());
    let started = Instant::now();
    let output = decoder.model.forward(
        ids,
        &mut cache,
        ForwardOptions {
            logits: LogitRows::Last,
            attentions: true,
            hidden_states: false,
        },
    )?;
    let seconds = started.elapsed().as_secs_f64();
    Ok((seconds, argmax(&output.logits)))
}

/// attnflow's greedy decode: seconds of the steps and the tokens.
fn decode_once(decoder: &PretrainedDecoder, ids: &[u32], tokens: usize) -> Result<(f64, Vec<u32>)> {
    let mut cache = decoder.model.cache(ids.len() + tokens + 1);
    let output = decoder
        .model
        .forward(ids, &mut cache, ForwardOptions::default())?;
    let mut token = argmax(&output.logits);
    let mut generated = Vec::with_capacity(tokens);
    let started = Instant::now();
    for _ in 0..tokens {
        generated.push(token);
        let output = decoder
            .model
            .forward(&[token], &mut cache, ForwardOptions::default())?;
        token = argmax(&output.logits);
    }
    Ok((started.elapsed().as_secs_f64(), generated))
}

/// Runs the benchmark; `progress` receives a line per step.
pub fn bench_generate(
    config: &GenerateBenchConfig,
    mut progress: impl FnMut(&str),
) -> Result<GenerateBenchReport> {
    if config.rounds == 0 || config.prompt_tokens == 0 || config.decode_prompt_tokens == 0 {
        return Err(ModelError::input(
            "rounds and token counts",
            "must be at least 1",
        ));
    }
    progress("measuring the matmul ceilings");
    let mut machine = Machine::measure(config.python.as_deref());
    progress("loading the model");
    let decoder = PretrainedDecoder::open(&config.model)?;
    let text = crate::embed::bench_texts(400, 7).join(" ");
    let all = decoder.tokenizer.encode(&text)?.ids;
    let needed = config.prompt_tokens.max(config.decode_prompt_tokens);
    if all.len() < needed {
        return Err(ModelError::input(
            "prompt tokens",
            format!("at most {} available", all.len()),
        ));
    }
    if needed + config.decode_tokens + 1 > decoder.config.max_positions {
        return Err(ModelError::input(
            "prompt tokens",
            format!("the model's context is {}", decoder.config.max_positions),
        ));
    }
    let prefill_ids = &all[..config.prompt_tokens];
    let decode_ids = &all[..config.decode_prompt_tokens];
    let (mut peer, peer_info) = match &config.python {
        None => (
            None,
            serde_json::json!({"status": "skipped", "reason": "no Python given"}),
        ),
        Some(python) => {
            progress("loading the model in transformers");
            match Peer::start(python, &config.model, config.threads) {
                Ok((peer, info)) => (
                    Some(peer),
                    serde_json::json!({"status": "measured", "info": info}),
                ),
                Err(reason) => (
                    None,
                    serde_json::json!({"status": "skipped", "reason": reason}),
                ),
            }
        }
    };
    let peer_error = |error: String| ModelError::input("transformers", error);
    let mut prefill = CaseReport {
        name: "prefill".into(),
        unit: "ms".into(),
        attnflow: Vec::new(),
        peer: Vec::new(),
        ratios: Vec::new(),
        ratio: None,
        agreement: None,
    };
    let mut decode = CaseReport {
        name: "decode".into(),
        unit: "tokens/s".into(),
        ..prefill.clone()
    };
    let (mut next_agree, mut tokens_agree) = (true, true);
    // Round 0 warms both sides up and is not counted.
    for round in 0..=config.rounds {
        progress(&format!("round {round} of {}", config.rounds));
        let (seconds, next) = prefill_once(&decoder, prefill_ids)?;
        let peer_prefill = match peer.as_mut() {
            Some(peer) => Some(
                peer.ask(&serde_json::json!({"prefill": {"ids": prefill_ids}}))
                    .map_err(peer_error)?,
            ),
            None => None,
        };
        let (decode_seconds, generated) = decode_once(&decoder, decode_ids, config.decode_tokens)?;
        let peer_decode = match peer.as_mut() {
            Some(peer) => Some(
                peer.ask(&serde_json::json!({"decode": {"ids": decode_ids, "tokens": config.decode_tokens}}))
                    .map_err(peer_error)?,
            ),
            None => None,
        };
        if round == 0 {
            continue;
        }
        prefill.attnflow.push(seconds * 1e3);
        let rate = config.decode_tokens as f64 / decode_seconds;
        decode.attnflow.push(rate);
        if let (Some(theirs), Some(theirs_decode)) = (peer_prefill, peer_decode) {
            let peer_seconds = theirs["seconds"].as_f64().unwrap_or(f64::NAN);
            prefill.peer.push(peer_seconds * 1e3);
            prefill.ratios.push(peer_seconds / seconds);
            next_agree &= theirs["next"].as_u64() == Some(next as u64);
            let peer_rate =
                config.decode_tokens as f64 / theirs_decode["seconds"].as_f64().unwrap_or(f64::NAN);
            decode.peer.push(peer_rate);
            decode.ratios.push(rate / peer_rate);
            let theirs_tokens: Vec<u64> = theirs_decode["generated"]
                .as_array()
                .map(|tokens| tokens.iter().filter_map(|t| t.as_u64()).collect())
                .unwrap_or_default();
            tokens_agree &=
                theirs_tokens == generated.iter().map(|&t| t as u64).collect::<Vec<_>>();
        }
    }
    drop(peer);
    if !prefill.peer.is_empty() {
        prefill.agreement = Some(
            if next_agree {
                "same next token"
            } else {
                "next token differs"
            }
            .into(),
        );
        decode.agreement = Some(if tokens_agree {
            format!("same {} greedy tokens", config.decode_tokens)
        } else {
            "greedy tokens differ".to_string()
        });
    }
    prefill.ratio = Spread::of(&prefill.ratios);
    decode.ratio = Spread::of(&decode.ratios);
    machine.finish();
    Ok(GenerateBenchReport {
        config: config.clone(),
        machine,
        peer: peer_info,
        attnflow_peak_bytes: None,
        cases: vec![prefill, decode],
    })
}
