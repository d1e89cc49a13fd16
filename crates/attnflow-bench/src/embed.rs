//! Embedding throughput of attnflow against sentence-transformers on the
//! same texts, in one run (`attnflow bench embed`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use attnflow_models::{ModelError, PretrainedBert, Result};

use crate::protocol::{run_rounds, Protocol, Rounds};

/// Settings of one embedding benchmark.
#[derive(Clone, Debug)]
pub struct EmbedBenchConfig {
    /// Number of generated texts.
    pub texts: usize,
    /// Texts per forward pass, for both tools.
    pub batch_size: usize,
    /// The Python interpreter that runs sentence-transformers; `None` skips
    /// the peer.
    pub python: Option<PathBuf>,
    /// Seed of the text generator.
    pub seed: u64,
}

/// How the peer run went.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum PeerOutcome {
    /// Measured on the same texts.
    Measured {
        /// Seconds to embed every text (model loading and warm-up excluded).
        seconds: f64,
        /// Texts per second.
        texts_per_second: f64,
        /// sentence-transformers' version.
        version: String,
        /// torch's version.
        torch: String,
        /// torch's CPU threads.
        threads: u64,
        /// The smallest cosine similarity between the two tools' embedding
        /// of one text.
        min_cosine: f64,
        /// The largest absolute difference of one embedding coordinate.
        max_abs_difference: f64,
    },
    /// Not run, with the reason (not installed, skipped by the user).
    Skipped {
        /// Why.
        reason: String,
    },
    /// Started but failed, with its message.
    Failed {
        /// What went wrong.
        error: String,
    },
}

/// The result of [`bench_embed`].
#[derive(Clone, Debug, Serialize)]
pub struct EmbedBenchReport {
    /// The model directory.
    pub model: PathBuf,
    /// Number of texts.
    pub texts: usize,
    /// Mean word pieces per text, `[CLS]`/`[SEP]` included.
    pub mean_tokens: f64,
    /// Texts per forward pass.
    pub batch_size: usize,
    /// Seconds attnflow took (model loading and warm-up excluded).
    pub attnflow_seconds: f64,
    /// attnflow's texts per second.
    pub attnflow_texts_per_second: f64,
    /// The peer's run.
    pub peer: PeerOutcome,
    /// attnflow's throughput over the peer's, when both ran.
    pub ratio: Option<f64>,
}

/// Words of the generated texts: common English and the vocabulary of the
/// field, so that texts split into realistic word pieces.
const WORDS: &[&str] = &[
    "the",
    "a",
    "of",
    "to",
    "and",
    "in",
    "is",
    "was",
    "that",
    "for",
    "on",
    "with",
    "as",
    "by",
    "at",
    "from",
    "this",
    "an",
    "be",
    "model",
    "attention",
    "layer",
    "head",
    "token",
    "sentence",
    "network",
    "weight",
    "matrix",
    "query",
    "key",
    "value",
    "softmax",
    "training",
    "data",
    "result",
    "paper",
    "figure",
    "table",
    "method",
    "approach",
    "small",
    "large",
    "fast",
    "slow",
    "new",
    "old",
    "first",
    "last",
    "every",
    "each",
    "many",
    "few",
    "simple",
    "deep",
    "learns",
    "shows",
    "gives",
    "uses",
    "reads",
    "writes",
    "finds",
    "makes",
    "runs",
    "takes",
    "keeps",
    "builds",
    "river",
    "mountain",
    "city",
    "kitchen",
    "garden",
    "music",
    "winter",
    "morning",
    "student",
    "teacher",
    "doctor",
    "engineer",
    "question",
    "answer",
    "story",
    "picture",
    "window",
    "market",
    "language",
];

/// `count` deterministic sentences of 4 to 40 words, from `seed`.
pub fn bench_texts(count: usize, seed: u64) -> Vec<String> {
    // SplitMix64: a tiny, well-mixed generator, so no dependency is needed.
    let mut state = seed;
    let mut next = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    (0..count)
        .map(|_| {
            let length = 4 + (next() % 37) as usize;
            let mut words: Vec<String> = (0..length)
                .map(|_| WORDS[(next() % WORDS.len() as u64) as usize].to_string())
                .collect();
            if let Some(first) = words.first_mut() {
                let mut letters = first.chars();
                if let Some(initial) = letters.next() {
                    *first = initial.to_uppercase().chain(letters).collect();
                }
            }
            format!("{}.", words.join(" "))
        })
        .collect()
}

/// The peer: sentence-transformers on the CPU, on the texts of a file,
/// writing its embeddings as little-endian f32 so they can be compared.
const PEER_SCRIPT: &str = include_str!("../peers/embed_sentence_transformers.py");

/// Embeds `config.texts` generated texts with the model in `directory`,
/// then (unless `config.python` is `None`) the same texts with
/// sentence-transformers, and reports both throughputs, their ratio and
/// how closely the embeddings agree. Both runs exclude model loading and
/// embed one batch to warm up first.
pub fn bench_embed(directory: &Path, config: &EmbedBenchConfig) -> Result<EmbedBenchReport> {
    if config.texts == 0 {
        return Err(ModelError::input(
            "texts",
            "the benchmark needs at least 1 text",
        ));
    }
    let model = PretrainedBert::open(directory, &candle_core::Device::Cpu)?;
    let texts = bench_texts(config.texts, config.seed);
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let warm_up = config.batch_size.min(refs.len());
    model.embed(&refs[..warm_up], config.batch_size, |_| {})?;
    let started = Instant::now();
    let ours = model.embed(&refs, config.batch_size, |_| {})?;
    let attnflow_seconds = started.elapsed().as_secs_f64();
    let ours_rows = ours.embeddings.to_vec2::<f32>()?;

    let peer = match &config.python {
        None => PeerOutcome::Skipped {
            reason: "skipped by request".to_string(),
        },
        Some(python) => run_peer(python, directory, &texts, config.batch_size, &ours_rows),
    };
    let attnflow_texts_per_second = texts.len() as f64 / attnflow_seconds.max(1e-9);
    let ratio = match &peer {
        PeerOutcome::Measured {
            texts_per_second, ..
        } => Some(attnflow_texts_per_second / texts_per_second),
        _ => None,
    };
    Ok(EmbedBenchReport {
        model: directory.to_path_buf(),
        texts: texts.len(),
        mean_tokens: ours.token_counts.iter().sum::<usize>() as f64 / texts.len() as f64,
        batch_size: config.batch_size,
        attnflow_seconds,
        attnflow_texts_per_second,
        peer,
        ratio,
    })
}

/// [`bench_embed`] under the measurement protocol: `protocol.rounds`
/// interleaved rounds, each embedding the texts with attnflow then the
/// peer.
pub fn bench_embed_rounds(
    directory: &Path,
    config: &EmbedBenchConfig,
    protocol: &Protocol,
) -> Result<Rounds<EmbedBenchReport>> {
    run_rounds(protocol, |_| bench_embed(directory, config))
}

fn run_peer(
    python: &Path,
    directory: &Path,
    texts: &[String],
    batch_size: usize,
    ours: &[Vec<f32>],
) -> PeerOutcome {
    let failed = |error: String| PeerOutcome::Failed { error };
    // Removed when dropped, whatever the outcome.
    let scratch = match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(error) => return failed(format!("cannot make a scratch directory: {error}")),
    };
    let input = scratch.path().join("texts.txt");
    let output = scratch.path().join("embeddings.f32");
    let result = (|| {
        std::fs::write(
            &input,
            texts.iter().map(|t| format!("{t}\n")).collect::<String>(),
        )
        .map_err(|error| failed(format!("cannot write {}: {error}", input.display())))?;
        let run = std::process::Command::new(python)
            .arg("-c")
            .arg(PEER_SCRIPT)
            .arg(directory)
            .arg(&input)
            .arg(batch_size.to_string())
            .arg(&output)
            .stdin(std::process::Stdio::null())
            .output();
        let run = match run {
            Ok(run) => run,
            Err(error) => {
                return Err(PeerOutcome::Skipped {
                    reason: format!("cannot start {}: {error}", python.display()),
                })
            }
        };
        let stdout = String::from_utf8_lossy(&run.stdout);
        if !run.status.success() {
            let stderr = String::from_utf8_lossy(&run.stderr);
            return Err(failed(format!(
                "{} exited with {}: {}",
                python.display(),
                run.status,
                stderr.trim().lines().last().unwrap_or("")
            )));
        }
        let line = stdout.trim().lines().last().unwrap_or("");
        let value: serde_json::Value = serde_json::from_str(line)
            .map_err(|error| failed(format!("unexpected output {line:?}: {error}")))?;
        if value["status"] == "skipped" {
            return Err(PeerOutcome::Skipped {
                reason: value["reason"].as_str().unwrap_or("unknown").to_string(),
            });
        }
        let seconds = value["seconds"]
            .as_f64()
            .ok_or_else(|| failed(format!("no timing in {line:?}")))?;
        let bytes = std::fs::read(&output)
            .map_err(|error| failed(format!("cannot read the peer's embeddings: {error}")))?;
        let width = ours.first().map_or(0, Vec::len);
        if bytes.len() != texts.len() * width * 4 {
            return Err(failed(format!(
                "the peer wrote {} bytes of embeddings; expected {} texts × {width} floats",
                bytes.len(),
                texts.len()
            )));
        }
        let theirs: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|chunk| f32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]))
            .collect();
        let (mut min_cosine, mut max_abs_difference) = (f64::INFINITY, 0f64);
        for (row, mine) in theirs.chunks_exact(width.max(1)).zip(ours) {
            let dot: f64 = row
                .iter()
                .zip(mine)
                .map(|(a, b)| (*a as f64) * (*b as f64))
                .sum();
            let norm = |v: &mut dyn Iterator<Item = f64>| v.map(|x| x * x).sum::<f64>().sqrt();
            let cosine = dot
                / (norm(&mut row.iter().map(|&x| x as f64))
                    * norm(&mut mine.iter().map(|&x| x as f64)));
            min_cosine = min_cosine.min(cosine);
            for (a, b) in row.iter().zip(mine) {
                max_abs_difference = max_abs_difference.max((a - b).abs() as f64);
            }
        }
        Ok(PeerOutcome::Measured {
            seconds,
            texts_per_second: texts.len() as f64 / seconds.max(1e-9),
            version: value["version"].as_str().unwrap_or("?").to_string(),
            torch: value["torch"].as_str().unwrap_or("?").to_string(),
            threads: value["threads"].as_u64().unwrap_or(0),
            min_cosine,
            max_abs_difference,
        })
    })();
    result.unwrap_or_else(|outcome| outcome)
}

impl crate::protocol::Round for EmbedBenchReport {
    fn ratios(&self) -> Vec<(String, Option<f64>)> {
        vec![("texts/s".to_string(), self.ratio)]
    }

    fn to_text(&self) -> String {
        EmbedBenchReport::to_text(self)
    }
}

impl EmbedBenchReport {
    /// The report as people read it.
    pub fn to_text(&self) -> String {
        use std::fmt::Write as _;
        let mut out = format!(
            "bench embed: {} texts (mean {:.1} word pieces), batch {}, model {}\n",
            self.texts,
            self.mean_tokens,
            self.batch_size,
            self.model.display()
        );
        let _ = writeln!(
            out,
            "  attnflow               {:>8.1} texts/s ({:.2} s)",
            self.attnflow_texts_per_second, self.attnflow_seconds
        );
        let _ = match &self.peer {
            PeerOutcome::Measured {
                seconds,
                texts_per_second,
                version,
                torch,
                threads,
                min_cosine,
                max_abs_difference,
            } => {
                let _ = writeln!(
                    out,
                    "  sentence-transformers  {texts_per_second:>8.1} texts/s ({seconds:.2} s; sentence-transformers {version}, torch {torch}, {threads} threads)"
                );
                if let Some(ratio) = self.ratio {
                    let _ = writeln!(out, "  ratio attnflow / sentence-transformers: {ratio:.2}×");
                }
                writeln!(
                    out,
                    "  agreement over {} texts: min cosine {min_cosine:.6}, max |difference| {max_abs_difference:.1e}",
                    self.texts
                )
            }
            PeerOutcome::Skipped { reason } => {
                writeln!(out, "  sentence-transformers not run: {reason}")
            }
            PeerOutcome::Failed { error } => {
                writeln!(out, "  sentence-transformers failed: {error}")
            }
        };
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_are_deterministic_and_varied() {
        let a = bench_texts(200, 7);
        assert_eq!(a, bench_texts(200, 7));
        assert_ne!(a, bench_texts(200, 8));
        let lengths: Vec<usize> = a.iter().map(|t| t.split(' ').count()).collect();
        assert!(lengths.iter().all(|&n| (4..=40).contains(&n)));
        assert!(lengths.iter().min() < Some(&8) && lengths.iter().max() > Some(&35));
        assert!(a
            .iter()
            .all(|t| t.ends_with('.') && t.chars().next().unwrap().is_uppercase()));
    }
}
