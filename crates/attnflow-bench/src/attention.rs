//! `attnflow bench attention`: the fused kernel, the exact path and
//! PyTorch's `scaled_dot_product_attention`, timed side by side.
//!
//! Each case (engine × pass × n) runs in a fresh process so that its peak
//! resident memory (Linux `VmHWM`) is its own: the caller supplies the way
//! to run a case in isolation (the CLI re-runs itself). Times are the best
//! of `repeats` runs after one warm-up run, for every engine alike, and
//! throughput counts the same floating-point operations for all of them:
//! `4·n²·d` per head forward (two matrix products), and 3.5 times that for
//! forward plus backward (the backward's five products), as FlashAttention-2
//! reports.

use std::fmt::Write as _;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use candle_core::{Device, Tensor, Var};
use serde::{Deserialize, Serialize};

use attnflow_core::{
    fused_attention, scaled_dot_product_attention, AttentionMask, FusedOptions, SdpaOptions,
};

/// The committed PyTorch script (`peers/attention_torch.py`), fed to
/// the interpreter on standard input so the binary needs no file beside it.
pub const TORCH_SCRIPT: &str = include_str!("../peers/attention_torch.py");

/// What went wrong while benchmarking.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A tensor operation failed (allocation, shapes).
    #[error("case {case}: {source}")]
    Engine {
        /// The case, as `engine pass n=...`.
        case: String,
        /// What failed.
        #[source]
        source: attnflow_core::CoreError,
    },
    /// The PyTorch script could not run or printed something unexpected.
    #[error("PyTorch ({python}): {message}")]
    Torch {
        /// The interpreter used.
        python: String,
        /// What happened.
        message: String,
    },
    /// The isolated run of a case failed.
    #[error("case {case}: {message}")]
    Isolated {
        /// The case, as `engine pass n=...`.
        case: String,
        /// What happened.
        message: String,
    },
}

/// Which implementation a case times.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// attnflow's fused kernel.
    Fused,
    /// attnflow's exact path (materialises the weights).
    Exact,
    /// PyTorch's CPU `scaled_dot_product_attention`.
    Torch,
}

/// What a case times.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pass {
    /// Forward only, no gradient recorded.
    Forward,
    /// Forward, then backward of `Σ probe ∘ output` to q, k and v.
    ForwardBackward,
}

/// One timed configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Case {
    /// The implementation.
    pub engine: Engine,
    /// Forward or forward + backward.
    pub pass: Pass,
    /// Batch size.
    pub batch: usize,
    /// Heads.
    pub heads: usize,
    /// Sequence length (queries and keys).
    pub n: usize,
    /// Head width.
    pub d: usize,
    /// Timed runs after the warm-up (the best counts); 1 with no warm-up
    /// in quick mode.
    pub repeats: usize,
    /// Whether to run one untimed warm-up first.
    pub warm_up: bool,
    /// Keep repeating (up to 50 runs) until the timed runs add up to this
    /// many seconds: on a shared machine the best of many short runs finds
    /// the quiet moments, for every engine alike.
    #[serde(default)]
    pub min_seconds: f64,
}

impl Case {
    /// Floating-point operations counted for this case (see the module doc).
    pub fn flops(&self) -> f64 {
        let forward =
            4.0 * (self.batch * self.heads) as f64 * (self.n as f64).powi(2) * self.d as f64;
        match self.pass {
            Pass::Forward => forward,
            Pass::ForwardBackward => 3.5 * forward,
        }
    }

    /// What the exact path holds at once, roughly: several `n × n` f32
    /// matrices per head (scores, exponentials, weights, and with a backward
    /// their gradients and candle's saved intermediates).
    pub fn exact_bytes(&self) -> u64 {
        let matrix = (self.batch * self.heads * self.n * self.n * 4) as u64;
        // Measured peaks: 3.1 matrices forward at n = 4096, 13.6 with the
        // backward at n = 2048.
        match self.pass {
            Pass::Forward => matrix * 7 / 2,
            Pass::ForwardBackward => 14 * matrix,
        }
    }

    /// A short name for messages: `fused forward n=1024`.
    pub fn label(&self) -> String {
        let engine = match self.engine {
            Engine::Fused => "fused",
            Engine::Exact => "exact",
            Engine::Torch => "torch",
        };
        let pass = match self.pass {
            Pass::Forward => "forward",
            Pass::ForwardBackward => "forward+backward",
        };
        format!("{engine} {pass} n={}", self.n)
    }
}

/// The most timed runs of one case.
const MAX_RUNS: usize = 50;

/// The result of one case.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    /// Best wall-clock time of one run, seconds.
    pub seconds: f64,
    /// Peak resident memory of the process that ran the case, bytes.
    pub peak_rss_bytes: Option<u64>,
}

/// Runs a fused or exact case in this process; meant to be called in a
/// fresh process so the peak memory is the case's own.
pub fn run_case_in_process(case: &Case) -> Result<Measurement, BenchError> {
    let engine_error = |source: attnflow_core::CoreError| BenchError::Engine {
        case: case.label(),
        source,
    };
    let candle_error = |e: candle_core::Error| engine_error(e.into());
    // As in every attnflow process (see `attnflow_core::process`).
    attnflow_core::process::keep_freed_memory();
    let shape = (case.batch, case.heads, case.n, case.d);
    let device = Device::Cpu;
    let make = || Tensor::randn(0f32, 1f32, shape, &device).map_err(candle_error);
    let (q, k, v, probe) = (make()?, make()?, make()?, make()?);
    let (q, k, v) = match case.pass {
        Pass::Forward => (q, k, v),
        Pass::ForwardBackward => (
            Var::from_tensor(&q).map_err(candle_error)?.into_inner(),
            Var::from_tensor(&k).map_err(candle_error)?.into_inner(),
            Var::from_tensor(&v).map_err(candle_error)?.into_inner(),
        ),
    };
    let mask = AttentionMask::none();
    let run = || -> Result<(), BenchError> {
        let output = match case.engine {
            Engine::Fused => {
                fused_attention(&q, &k, &v, &mask, &FusedOptions::default())
                    .map_err(engine_error)?
                    .output
            }
            Engine::Exact => {
                scaled_dot_product_attention(&q, &k, &v, &mask, &SdpaOptions::default())
                    .map_err(engine_error)?
                    .output
            }
            Engine::Torch => {
                return Err(BenchError::Isolated {
                    case: case.label(),
                    message: "PyTorch cases run through the Python script".to_string(),
                })
            }
        };
        if case.pass == Pass::ForwardBackward {
            let loss = (output * &probe)
                .and_then(|t| t.sum_all())
                .map_err(candle_error)?;
            let grads = loss.backward().map_err(candle_error)?;
            if grads.get(&q).is_none() {
                return Err(BenchError::Isolated {
                    case: case.label(),
                    message: "the backward produced no gradient for q".to_string(),
                });
            }
        }
        Ok(())
    };
    if case.warm_up {
        run()?;
    }
    let mut best = f64::INFINITY;
    let mut spent = 0.0;
    let mut runs = 0;
    while runs < case.repeats.max(1) || (spent < case.min_seconds && runs < MAX_RUNS) {
        let start = Instant::now();
        run()?;
        let seconds = start.elapsed().as_secs_f64();
        best = best.min(seconds);
        spent += seconds;
        runs += 1;
    }
    Ok(Measurement {
        seconds: best,
        peak_rss_bytes: attnflow_base::peak_rss_bytes(),
    })
}

/// The PyTorch version `python` has, or why it has none.
pub fn torch_version(python: &Path) -> Result<String, String> {
    let output = Command::new(python)
        .args(["-c", "import torch; print(torch.__version__)"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr.lines().last().unwrap_or("import torch failed");
        return Err(format!("{}: {last}", python.display()));
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

#[derive(Deserialize)]
struct TorchReply {
    seconds: f64,
    peak_rss_bytes: Option<u64>,
}

/// Runs the PyTorch script for one case (or, with `matmul`, its matrix
/// product timing at size `n`).
fn run_torch_script(python: &Path, args: &[String]) -> Result<TorchReply, BenchError> {
    let torch_error = |message: String| BenchError::Torch {
        python: python.display().to_string(),
        message,
    };
    let mut child = Command::new(python)
        .arg("-")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| torch_error(format!("cannot start: {e}")))?;
    child
        .stdin
        .take()
        .ok_or_else(|| torch_error("no standard input".to_string()))?
        .write_all(TORCH_SCRIPT.as_bytes())
        .map_err(|e| torch_error(format!("cannot send the script: {e}")))?;
    let output = child
        .wait_with_output()
        .map_err(|e| torch_error(format!("did not finish: {e}")))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(torch_error(format!(
            "exited with {}: {}",
            output.status,
            stderr.lines().last().unwrap_or("")
        )));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().last().unwrap_or("");
    serde_json::from_str(line).map_err(|e| torch_error(format!("unexpected output {line:?}: {e}")))
}

/// Times PyTorch's `scaled_dot_product_attention` on one case.
pub fn run_torch_case(python: &Path, case: &Case) -> Result<Measurement, BenchError> {
    let mode = match case.pass {
        Pass::Forward => "forward",
        Pass::ForwardBackward => "backward",
    };
    let args = vec![
        "--n".to_string(),
        case.n.to_string(),
        "--heads".to_string(),
        case.heads.to_string(),
        "--d".to_string(),
        case.d.to_string(),
        "--batch".to_string(),
        case.batch.to_string(),
        "--repeats".to_string(),
        case.repeats.to_string(),
        "--mode".to_string(),
        mode.to_string(),
        "--min-seconds".to_string(),
        case.min_seconds.to_string(),
    ];
    let reply = run_torch_script(python, &args)?;
    Ok(Measurement {
        seconds: reply.seconds,
        peak_rss_bytes: reply.peak_rss_bytes,
    })
}

/// The machine's matrix-multiply ceiling as attnflow sees it: GFLOP/s of
/// a `size³` f32 product through candle (the `gemm` crate on all threads),
/// best of at least three runs after a warm-up, repeated until the runs add
/// up to `min_seconds`.
pub fn matmul_ceiling(size: usize, min_seconds: f64) -> Result<f64, BenchError> {
    let error = |e: candle_core::Error| BenchError::Engine {
        case: format!("matmul {size}³"),
        source: e.into(),
    };
    let a = Tensor::randn(0f32, 1f32, (size, size), &Device::Cpu).map_err(error)?;
    let b = Tensor::randn(0f32, 1f32, (size, size), &Device::Cpu).map_err(error)?;
    a.matmul(&b).map_err(error)?;
    let mut best = f64::INFINITY;
    let (mut spent, mut runs) = (0.0, 0);
    while runs < 3 || (spent < min_seconds && runs < MAX_RUNS) {
        let start = Instant::now();
        a.matmul(&b).map_err(error)?;
        let seconds = start.elapsed().as_secs_f64();
        best = best.min(seconds);
        spent += seconds;
        runs += 1;
    }
    Ok(2.0 * (size as f64).powi(3) / best / 1e9)
}

/// PyTorch's matrix-multiply speed at `size³`, GFLOP/s.
pub fn torch_matmul_ceiling(
    python: &Path,
    size: usize,
    min_seconds: f64,
) -> Result<f64, BenchError> {
    let reply = run_torch_script(
        python,
        &[
            "--n".to_string(),
            size.to_string(),
            "--mode".to_string(),
            "matmul".to_string(),
            "--min-seconds".to_string(),
            min_seconds.to_string(),
        ],
    )?;
    Ok(2.0 * (size as f64).powi(3) / reply.seconds / 1e9)
}

/// What to benchmark.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    /// Sequence lengths.
    pub sizes: Vec<usize>,
    /// Batch size.
    pub batch: usize,
    /// Heads.
    pub heads: usize,
    /// Head width.
    pub d: usize,
    /// One run per case, no warm-up (for smoke tests).
    pub quick: bool,
    /// The Python interpreter to try for PyTorch; `None` skips PyTorch.
    pub python: Option<PathBuf>,
    /// The exact path is skipped where it would need more than this.
    pub exact_memory_limit: u64,
}

impl BenchConfig {
    /// The setting: n = 512 … 8192, d = 64, 8 heads, batch 1.
    pub fn standard() -> Self {
        Self {
            sizes: vec![512, 1024, 2048, 4096, 8192],
            batch: 1,
            heads: 8,
            d: 64,
            quick: false,
            python: Some(PathBuf::from("python3")),
            exact_memory_limit: 4 << 30,
        }
    }
}

/// How one engine fared on one row.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum Outcome {
    /// It ran.
    Measured {
        /// Best time of one run, seconds.
        seconds: f64,
        /// Throughput by the counted operations.
        gflops: f64,
        /// Peak resident memory of its process, bytes.
        peak_rss_bytes: Option<u64>,
    },
    /// It was not run, and why.
    Skipped {
        /// Why.
        reason: String,
    },
    /// It ran and failed.
    Failed {
        /// What happened.
        error: String,
    },
}

impl Outcome {
    fn from_result(result: Result<Measurement, BenchError>, flops: f64) -> Self {
        match result {
            Ok(m) => Self::Measured {
                seconds: m.seconds,
                gflops: flops / m.seconds / 1e9,
                peak_rss_bytes: m.peak_rss_bytes,
            },
            Err(e) => Self::Failed {
                error: e.to_string(),
            },
        }
    }

    /// The throughput, when measured.
    pub fn gflops(&self) -> Option<f64> {
        match self {
            Self::Measured { gflops, .. } => Some(*gflops),
            _ => None,
        }
    }
}

/// One row of the report: one n and one pass, every engine.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BenchRow {
    /// Sequence length.
    pub n: usize,
    /// Forward or forward + backward.
    pub pass: Pass,
    /// Counted operations, GFLOP.
    pub gflop: f64,
    /// attnflow's fused kernel.
    pub fused: Outcome,
    /// attnflow's exact path.
    pub exact: Outcome,
    /// PyTorch.
    pub torch: Outcome,
    /// Fused throughput over PyTorch's.
    pub fused_over_torch: Option<f64>,
    /// Fused throughput over the exact path's.
    pub fused_over_exact: Option<f64>,
}

/// The whole benchmark.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BenchReport {
    /// Batch, heads, head width.
    pub batch: usize,
    /// Heads.
    pub heads: usize,
    /// Head width.
    pub d: usize,
    /// Threads the Rust side used.
    pub threads: usize,
    /// The SIMD path of the fused kernel.
    pub simd_path: String,
    /// The size of the square f32 product timed for the ceilings (2048,
    /// or 256 in quick mode).
    pub matmul_size: usize,
    /// attnflow's measured matrix-multiply ceiling, GFLOP/s.
    pub matmul_gflops: f64,
    /// PyTorch's matrix-multiply speed at the same size, GFLOP/s.
    pub torch_matmul_gflops: Option<f64>,
    /// PyTorch's version, when it ran.
    pub torch_version: Option<String>,
    /// Why PyTorch did not run, when it did not.
    pub torch_note: Option<String>,
    /// One row per n and pass.
    pub rows: Vec<BenchRow>,
}

/// [`run_bench`] under the measurement protocol: `protocol.rounds`
/// interleaved rounds, each timing every case on every engine once.
pub fn run_bench_rounds(
    config: &BenchConfig,
    protocol: &crate::protocol::Protocol,
    isolated: &dyn Fn(&Case) -> Result<Measurement, BenchError>,
    progress: &mut dyn FnMut(BenchProgress),
) -> Result<crate::protocol::Rounds<BenchReport>, BenchError> {
    let rounds = protocol.rounds.max(1) as u64;
    crate::protocol::run_rounds(protocol, |round| {
        // The progress counts every round's cases once, up front.
        let mut each = |event: BenchProgress| match event {
            BenchProgress::Total(total) if round == 0 => {
                progress(BenchProgress::Total(total * rounds))
            }
            BenchProgress::Total(_) => {}
            BenchProgress::Case(label) => progress(BenchProgress::Case(label)),
        };
        run_bench(config, isolated, &mut each)
    })
}

/// Runs every case of `config`. `isolated` runs a fused or exact case in a
/// fresh process; `progress` hears each case's label before it starts and
/// the number of cases in all first.
pub fn run_bench(
    config: &BenchConfig,
    isolated: &dyn Fn(&Case) -> Result<Measurement, BenchError>,
    progress: &mut dyn FnMut(BenchProgress),
) -> Result<BenchReport, BenchError> {
    let torch = match &config.python {
        Some(python) => torch_version(python),
        None => Err("PyTorch not requested".to_string()),
    };
    let passes = [Pass::Forward, Pass::ForwardBackward];
    let total = 1 + config.sizes.len() * passes.len() * 3 + usize::from(torch.is_ok());
    progress(BenchProgress::Total(total as u64));
    progress(BenchProgress::Case("matmul ceiling".to_string()));
    let matmul_size = if config.quick { 256 } else { 2048 };
    let min_seconds = if config.quick { 0.0 } else { 2.0 };
    let matmul_gflops = matmul_ceiling(matmul_size, min_seconds)?;
    let torch_matmul_gflops = match (&torch, &config.python) {
        (Ok(_), Some(python)) => {
            progress(BenchProgress::Case("PyTorch matmul ceiling".to_string()));
            torch_matmul_ceiling(python, matmul_size, min_seconds).ok()
        }
        _ => None,
    };
    let mut rows = Vec::new();
    for &n in &config.sizes {
        for pass in passes {
            let case = |engine| Case {
                engine,
                pass,
                batch: config.batch,
                heads: config.heads,
                n,
                d: config.d,
                repeats: if config.quick { 1 } else { 3 },
                warm_up: !config.quick,
                min_seconds,
            };
            let flops = case(Engine::Fused).flops();

            let fused_case = case(Engine::Fused);
            progress(BenchProgress::Case(fused_case.label()));
            let fused = Outcome::from_result(isolated(&fused_case), flops);

            let exact_case = case(Engine::Exact);
            progress(BenchProgress::Case(exact_case.label()));
            let exact = if exact_case.exact_bytes() > config.exact_memory_limit {
                Outcome::Skipped {
                    reason: format!(
                        "would need about {:.1} GB (limit {:.1} GB)",
                        exact_case.exact_bytes() as f64 / 1e9,
                        config.exact_memory_limit as f64 / 1e9
                    ),
                }
            } else {
                Outcome::from_result(isolated(&exact_case), flops)
            };

            let torch_case = case(Engine::Torch);
            progress(BenchProgress::Case(torch_case.label()));
            let torch_outcome = match (&torch, &config.python) {
                (Ok(_), Some(python)) => {
                    Outcome::from_result(run_torch_case(python, &torch_case), flops)
                }
                (Err(reason), _) => Outcome::Skipped {
                    reason: reason.clone(),
                },
                (Ok(_), None) => Outcome::Skipped {
                    reason: "PyTorch not requested".to_string(),
                },
            };
            let ratio = |other: &Outcome| Some(fused.gflops()? / other.gflops()?);
            rows.push(BenchRow {
                n,
                pass,
                gflop: flops / 1e9,
                fused_over_torch: ratio(&torch_outcome),
                fused_over_exact: ratio(&exact),
                fused,
                exact,
                torch: torch_outcome,
            });
        }
    }
    Ok(BenchReport {
        batch: config.batch,
        heads: config.heads,
        d: config.d,
        threads: rayon::current_num_threads(),
        simd_path: attnflow_core::SimdPath::detect().to_string(),
        matmul_size,
        matmul_gflops,
        torch_matmul_gflops,
        torch_version: torch.as_ref().ok().cloned(),
        torch_note: torch.err(),
        rows,
    })
}

/// What [`run_bench`] reports while it works.
#[derive(Clone, Debug)]
pub enum BenchProgress {
    /// How many steps there are in all.
    Total(u64),
    /// A step is starting.
    Case(String),
}

/// Runs one case in a fresh process: `executable bench attention --case JSON`
/// (the `attnflow` binary), which calls [`run_case_in_process`] and prints
/// the measurement as JSON.
pub fn run_isolated(executable: &std::path::Path, case: &Case) -> Result<Measurement, BenchError> {
    let failed = |message: String| BenchError::Isolated {
        case: case.label(),
        message,
    };
    let json = serde_json::to_string(case).map_err(|e| failed(e.to_string()))?;
    let output = std::process::Command::new(executable)
        .args(["bench", "attention", "--case", &json])
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| failed(format!("cannot start {}: {e}", executable.display())))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(failed(format!(
            "exited with {}: {}",
            output.status,
            stderr.trim().lines().last().unwrap_or("")
        )));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(stdout.trim())
        .map_err(|e| failed(format!("unexpected output {:?}: {e}", stdout.trim())))
}

impl crate::protocol::Round for BenchReport {
    /// The fused kernel over PyTorch, one figure per n and pass.
    fn ratios(&self) -> Vec<(String, Option<f64>)> {
        self.rows
            .iter()
            .map(|row| {
                let pass = match row.pass {
                    Pass::Forward => "fwd",
                    Pass::ForwardBackward => "fwd+bwd",
                };
                (
                    format!("n={} {pass} fused/torch GFLOP/s", row.n),
                    row.fused_over_torch,
                )
            })
            .collect()
    }

    fn to_text(&self) -> String {
        BenchReport::to_text(self)
    }
}

impl BenchReport {
    /// The report as people read it: the machine, a Markdown table, notes.
    pub fn to_text(&self) -> String {
        let report = self;
        let mut out = String::new();

        let _ = writeln!(
            out,
            "bench attention: batch {}, {} heads, d = {}, f32, {} threads, SIMD path {}",
            report.batch, report.heads, report.d, report.threads, report.simd_path
        );
        let _ = write!(
            out,
            "matmul ceiling (f32 {size}×{size}×{size}): attnflow/gemm {:.1} GFLOP/s",
            report.matmul_gflops,
            size = report.matmul_size
        );
        match report.torch_matmul_gflops {
            Some(torch) => {
                let _ = writeln!(out, ", PyTorch {torch:.1} GFLOP/s");
            }
            None => {
                let _ = writeln!(out);
            }
        }
        match (&report.torch_version, &report.torch_note) {
            (Some(version), _) => {
                let _ = writeln!(out, "PyTorch {version}");
            }
            (None, Some(reason)) => {
                let _ = writeln!(out, "PyTorch not run: {reason}");
            }
            (None, None) => {
                let _ = writeln!(out, "PyTorch not run");
            }
        }
        let cell = |outcome: &Outcome| match outcome {
            Outcome::Measured { gflops, .. } => format!("{gflops:.1}"),
            Outcome::Skipped { .. } => "skipped".to_string(),
            Outcome::Failed { .. } => "failed".to_string(),
        };
        let memory = |outcome: &Outcome| match outcome {
            Outcome::Measured {
                peak_rss_bytes: Some(bytes),
                ..
            } => format!("{:.0}", *bytes as f64 / 1e6),
            _ => "-".to_string(),
        };
        let ratio = |r: Option<f64>| r.map_or("-".to_string(), |r| format!("{r:.2}×"));
        let header = [
            "n",
            "pass",
            "fused GFLOP/s",
            "exact GFLOP/s",
            "torch GFLOP/s",
            "fused/torch",
            "fused/exact",
            "fused % ceiling",
            "peak MB fused",
            "peak MB exact",
            "peak MB torch",
        ];
        let rows: Vec<Vec<String>> = report
            .rows
            .iter()
            .map(|row| {
                vec![
                    row.n.to_string(),
                    match row.pass {
                        Pass::Forward => "fwd".to_string(),
                        Pass::ForwardBackward => "fwd+bwd".to_string(),
                    },
                    cell(&row.fused),
                    cell(&row.exact),
                    cell(&row.torch),
                    ratio(row.fused_over_torch),
                    ratio(row.fused_over_exact),
                    row.fused.gflops().map_or("-".to_string(), |g| {
                        format!("{:.0}%", 100.0 * g / report.matmul_gflops)
                    }),
                    memory(&row.fused),
                    memory(&row.exact),
                    memory(&row.torch),
                ]
            })
            .collect();
        let _ = writeln!(out, "| {} |", header.join(" | "));
        let _ = writeln!(out, "|{}", "---|".repeat(header.len()));
        for row in &rows {
            let _ = writeln!(out, "| {} |", row.join(" | "));
        }
        let mut notes = Vec::new();
        for row in &report.rows {
            for (engine, outcome) in [
                ("fused", &row.fused),
                ("exact", &row.exact),
                ("torch", &row.torch),
            ] {
                match outcome {
                    // Said once above.
                    Outcome::Skipped { .. }
                        if engine == "torch" && report.torch_version.is_none() => {}
                    Outcome::Skipped { reason } => {
                        notes.push(format!("n={} {engine}: skipped, {reason}", row.n))
                    }
                    Outcome::Failed { error } => {
                        notes.push(format!("n={} {engine}: failed, {error}", row.n))
                    }
                    Outcome::Measured { .. } => {}
                }
            }
        }
        notes.dedup();
        for note in notes {
            let _ = writeln!(out, "{note}");
        }
        let _ = writeln!(
        out,
        "GFLOP counted as 4·n²·d per head forward, 3.5× that for forward+backward; peak MB is each case's own process (VmHWM), PyTorch's includes its interpreter."
    );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counted_operations_follow_the_flash_attention_convention() {
        let case = Case {
            engine: Engine::Fused,
            pass: Pass::Forward,
            batch: 1,
            heads: 8,
            n: 1024,
            d: 64,
            repeats: 1,
            warm_up: false,
            min_seconds: 0.0,
        };
        assert_eq!(case.flops(), 4.0 * 8.0 * 1024.0 * 1024.0 * 64.0);
        let both = Case {
            pass: Pass::ForwardBackward,
            ..case.clone()
        };
        assert_eq!(both.flops(), 3.5 * case.flops());
        assert_eq!(case.label(), "fused forward n=1024");
    }

    #[test]
    fn a_tiny_case_runs_in_process() {
        for engine in [Engine::Fused, Engine::Exact] {
            for pass in [Pass::Forward, Pass::ForwardBackward] {
                let case = Case {
                    engine,
                    pass,
                    batch: 1,
                    heads: 2,
                    n: 32,
                    d: 8,
                    repeats: 1,
                    warm_up: false,
                    min_seconds: 0.0,
                };
                let measured = run_case_in_process(&case).unwrap();
                assert!(measured.seconds > 0.0);
            }
        }
    }
}
