//! The measurement protocol every `attnflow bench` command follows.
//!
//! A single run of two engines says little on a machine whose other jobs
//! come and go: whichever side ran during a busy second loses. So each
//! bench runs its sides interleaved (attnflow, peer, attnflow, peer, …) for
//! several rounds, and reports every ratio as the median over the rounds
//! with its minimum and maximum. Beside the figures it prints the machine:
//! the CPU, its cores, the SIMD path attnflow's kernels take, the matrix
//! product ceiling each side reaches (attnflow's `gemm` and PyTorch's
//! `torch.matmul`), and the load average before and after, with a warning
//! when other work held more than a quarter of each core.
//!
//! A bench supplies one round ([`Round`]); [`run_rounds`] does the rest.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::attention;

/// Rounds when the user names none.
pub const DEFAULT_ROUNDS: usize = 5;

/// Load average per core above which figures are flagged as unreliable.
pub const LOAD_PER_CORE_LIMIT: f64 = 0.25;

/// Side of the square matrix product that measures each side's ceiling.
const CEILING_SIZE: usize = 1024;

/// Seconds of repeated products behind each ceiling (the best counts).
const CEILING_SECONDS: f64 = 0.3;

/// How a bench is run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Protocol {
    /// Interleaved rounds (at least 1; 5 by default).
    pub rounds: usize,
    /// The Python interpreter whose PyTorch gives the peer's matrix product
    /// ceiling; `None` leaves that ceiling out.
    pub python: Option<PathBuf>,
}

impl Default for Protocol {
    fn default() -> Self {
        Self {
            rounds: DEFAULT_ROUNDS,
            python: Some(PathBuf::from("python3")),
        }
    }
}

/// One round of a bench: both sides once, attnflow first.
pub trait Round: Serialize {
    /// Each compared figure as `(label, attnflow / peer)`, higher meaning
    /// attnflow is faster; `None` where the peer did not run.
    fn ratios(&self) -> Vec<(String, Option<f64>)>;

    /// The round's own table, as people read it.
    fn to_text(&self) -> String;
}

/// The median, minimum and maximum of a figure over the rounds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    /// The middle value (the mean of the two middle ones for an even count).
    pub median: f64,
    /// The smallest value.
    pub min: f64,
    /// The largest value.
    pub max: f64,
    /// Every round's value, in round order.
    pub values: Vec<f64>,
}

impl Spread {
    /// The spread of `values`; `None` when there are none or one is not a
    /// finite number (a ratio of a side that did not run).
    pub fn of(values: &[f64]) -> Option<Spread> {
        if values.is_empty() || values.iter().any(|value| !value.is_finite()) {
            return None;
        }
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let middle = sorted.len() / 2;
        let median = if sorted.len() % 2 == 0 {
            (sorted[middle - 1] + sorted[middle]) / 2.0
        } else {
            sorted[middle]
        };
        Some(Spread {
            median,
            min: sorted[0],
            max: sorted[sorted.len() - 1],
            values: values.to_vec(),
        })
    }
}

/// One compared figure over every round.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RatioSpread {
    /// What is compared (`tokens/s`, `n=1024 fwd`, …).
    pub label: String,
    /// attnflow / peer over the rounds; `None` when the peer missed a round.
    pub ratio: Option<Spread>,
}

/// The machine the figures come from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    /// The CPU's model name (`/proc/cpuinfo`), or the architecture.
    pub cpu_model: String,
    /// Logical cores this process may use.
    pub cores: usize,
    /// The SIMD path attnflow's kernels take here.
    pub simd_path: String,
    /// attnflow's matrix product (the kernel layer's `gemm`), GFLOP/s at
    /// 1024³.
    pub attnflow_matmul_gflops: Option<f64>,
    /// PyTorch's `torch.matmul`, GFLOP/s at 1024³.
    pub pytorch_matmul_gflops: Option<f64>,
    /// Why a ceiling is missing, when one is.
    pub ceiling_notes: Vec<String>,
    /// 1-minute load average before the rounds.
    pub load_before: Option<f64>,
    /// 1-minute load average after the rounds.
    pub load_after: Option<f64>,
}

impl Machine {
    /// Describes this machine and measures both ceilings (PyTorch's through
    /// `python` when given); the load after is filled in by
    /// [`Machine::finish`].
    pub fn measure(python: Option<&Path>) -> Machine {
        let mut notes = Vec::new();
        let load_before = load_average();
        let attnflow_matmul_gflops = Some(kernels_matmul_gflops(CEILING_SIZE, CEILING_SECONDS));
        let pytorch_matmul_gflops = match python {
            None => None,
            Some(python) => match attention::torch_version(python) {
                Err(why) => {
                    notes.push(format!("PyTorch ceiling not measured: {why}"));
                    None
                }
                Ok(_) => {
                    match attention::torch_matmul_ceiling(python, CEILING_SIZE, CEILING_SECONDS) {
                        Ok(gflops) => Some(gflops),
                        Err(error) => {
                            notes.push(format!("PyTorch ceiling: {error}"));
                            None
                        }
                    }
                }
            },
        };
        Machine {
            cpu_model: cpu_model(),
            cores: std::thread::available_parallelism().map_or(1, usize::from),
            simd_path: attnflow_kernels::SimdPath::detect().to_string(),
            attnflow_matmul_gflops,
            pytorch_matmul_gflops,
            ceiling_notes: notes,
            load_before,
            load_after: None,
        }
    }

    /// Records the load average after the rounds.
    pub fn finish(&mut self) {
        self.load_after = load_average();
    }

    /// Whether other work shared the machine: the load average before
    /// exceeded [`LOAD_PER_CORE_LIMIT`] per core, or the one after exceeded
    /// that plus one per core (the bench's own threads, one per core, are
    /// in the average after it).
    pub fn loaded(&self) -> bool {
        let limit = LOAD_PER_CORE_LIMIT * self.cores as f64;
        self.load_before.is_some_and(|load| load > limit)
            || self
                .load_after
                .is_some_and(|load| load > limit + self.cores as f64)
    }

    /// The machine as people read it, with the load warning in bold.
    pub fn to_text(&self) -> String {
        let gflops = |value: Option<f64>| value.map_or("-".to_string(), |v| format!("{v:.0}"));
        let load = |value: Option<f64>| value.map_or("-".to_string(), |v| format!("{v:.2}"));
        let mut out = format!(
            "machine: {}, {} cores, SIMD {}; matmul ceiling (1024³, GFLOP/s): attnflow {}, PyTorch {}; load average {} before, {} after\n",
            self.cpu_model,
            self.cores,
            self.simd_path,
            gflops(self.attnflow_matmul_gflops),
            gflops(self.pytorch_matmul_gflops),
            load(self.load_before),
            load(self.load_after),
        );
        for note in &self.ceiling_notes {
            let _ = writeln!(out, "  {note}");
        }
        if self.loaded() {
            let _ = writeln!(
                out,
                "\x1b[1mwarning: the load average exceeded {LOAD_PER_CORE_LIMIT} per core ({:.2} on {} cores): other work shared the machine, so these figures are not a measurement\x1b[0m",
                LOAD_PER_CORE_LIMIT * self.cores as f64,
                self.cores
            );
        }
        out
    }
}

/// A bench's outcome under the protocol.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rounds<R> {
    /// The machine.
    pub machine: Machine,
    /// Every round, in order.
    pub rounds: Vec<R>,
    /// Each compared figure's ratio over the rounds.
    pub ratios: Vec<RatioSpread>,
}

/// Measures the machine, runs `rounds` rounds of `round` (given the round's
/// index), each running attnflow then the peer, and gathers the ratios.
pub fn run_rounds<R: Round, E>(
    protocol: &Protocol,
    mut round: impl FnMut(usize) -> Result<R, E>,
) -> Result<Rounds<R>, E> {
    let mut machine = Machine::measure(protocol.python.as_deref());
    let rounds = (0..protocol.rounds.max(1))
        .map(&mut round)
        .collect::<Result<Vec<R>, E>>()?;
    machine.finish();
    let ratios = ratio_spreads(&rounds);
    Ok(Rounds {
        machine,
        rounds,
        ratios,
    })
}

/// Each label's ratios gathered over the rounds, in the first round's order.
fn ratio_spreads<R: Round>(rounds: &[R]) -> Vec<RatioSpread> {
    let per_round: Vec<Vec<(String, Option<f64>)>> = rounds.iter().map(Round::ratios).collect();
    let Some(first) = per_round.first() else {
        return Vec::new();
    };
    first
        .iter()
        .map(|(label, _)| {
            let values: Option<Vec<f64>> = per_round
                .iter()
                .map(|ratios| {
                    ratios
                        .iter()
                        .find(|(other, _)| other == label)
                        .and_then(|(_, ratio)| *ratio)
                })
                .collect();
            RatioSpread {
                label: label.clone(),
                ratio: values.and_then(|values| Spread::of(&values)),
            }
        })
        .collect()
}

impl<R: Round> Rounds<R> {
    /// The machine, the last round's table and every ratio's median with
    /// its range.
    pub fn to_text(&self) -> String {
        let mut out = self.machine.to_text();
        if let Some(last) = self.rounds.last() {
            let _ = writeln!(out, "round {} of {}:", self.rounds.len(), self.rounds.len());
            out.push_str(&last.to_text());
        }
        let _ = writeln!(
            out,
            "attnflow / peer over {} interleaved rounds: median (min-max)",
            self.rounds.len()
        );
        for spread in &self.ratios {
            let _ = match &spread.ratio {
                Some(ratio) => writeln!(
                    out,
                    "  {}: {:.2}× ({:.2}-{:.2})",
                    spread.label, ratio.median, ratio.min, ratio.max
                ),
                None => writeln!(
                    out,
                    "  {}: - (the peer did not run every round)",
                    spread.label
                ),
            };
        }
        out
    }
}

/// The 1-minute load average (Linux `/proc/loadavg`).
pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The CPU's model name, or the architecture where `/proc/cpuinfo` has none.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split_once(':'))
                .map(|(_, name)| name.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

/// GFLOP/s of a `size³` f32 product through attnflow's kernel layer
/// (`gemm` in fixed column blocks on its one pool), best of at least three
/// runs after a warm-up, repeated until the runs add up to `min_seconds`.
pub fn kernels_matmul_gflops(size: usize, min_seconds: f64) -> f64 {
    use attnflow_kernels::{matmul, Operand};
    // Values in [-1, 1): the product's speed does not depend on them.
    let values: Vec<f32> = (0..size * size)
        .map(|index| ((index * 7919) % 2000) as f32 / 1000.0 - 1.0)
        .collect();
    let mut product = vec![0f32; size * size];
    let mut run = || {
        let started = std::time::Instant::now();
        attnflow_kernels::threads::install(|| {
            matmul(
                &mut product,
                false,
                (size, size, size),
                Operand::rows(&values, size),
                Operand::rows(&values, size),
            )
        });
        started.elapsed().as_secs_f64()
    };
    run();
    let (mut best, mut spent, mut runs) = (f64::INFINITY, 0.0, 0);
    while runs < 3 || (spent < min_seconds && runs < 50) {
        let seconds = run();
        best = best.min(seconds);
        spent += seconds;
        runs += 1;
    }
    2.0 * (size as f64).powi(3) / best / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_takes_the_middle_and_the_ends() {
        let odd = Spread::of(&[3.0, 1.0, 2.0, 5.0, 4.0]).unwrap();
        assert_eq!((odd.median, odd.min, odd.max), (3.0, 1.0, 5.0));
        assert_eq!(odd.values, [3.0, 1.0, 2.0, 5.0, 4.0]);
        let even = Spread::of(&[0.9, 1.3, 1.1, 1.0]).unwrap();
        assert!((even.median - 1.05).abs() < 1e-12);
        assert_eq!((even.min, even.max), (0.9, 1.3));
        assert_eq!(Spread::of(&[2.5]).unwrap().median, 2.5);
        assert!(Spread::of(&[]).is_none());
        assert!(Spread::of(&[1.0, f64::NAN]).is_none());
    }

    #[derive(Debug, Serialize)]
    struct Fake {
        ratios: Vec<(String, Option<f64>)>,
    }

    impl Round for Fake {
        fn ratios(&self) -> Vec<(String, Option<f64>)> {
            self.ratios.clone()
        }
        fn to_text(&self) -> String {
            "table\n".into()
        }
    }

    #[test]
    fn rounds_run_in_order_and_ratios_gather_by_label() {
        let protocol = Protocol {
            rounds: 3,
            python: None,
        };
        let mut seen = Vec::new();
        let outcome = run_rounds(&protocol, |index| -> Result<Fake, String> {
            seen.push(index);
            Ok(Fake {
                ratios: vec![
                    ("fast".into(), Some(1.0 + index as f64)),
                    ("peerless".into(), (index != 1).then_some(2.0)),
                ],
            })
        })
        .unwrap();
        assert_eq!(seen, [0, 1, 2]);
        assert_eq!(outcome.rounds.len(), 3);
        let fast = outcome.ratios[0].ratio.as_ref().unwrap();
        assert_eq!((fast.median, fast.min, fast.max), (2.0, 1.0, 3.0));
        assert_eq!(outcome.ratios[1].label, "peerless");
        assert!(outcome.ratios[1].ratio.is_none());
        let text = outcome.to_text();
        assert!(text.contains("fast: 2.00× (1.00-3.00)"), "{text}");
        assert!(text.contains("round 3 of 3:\ntable\n"), "{text}");
        let failed = run_rounds(&protocol, |index| {
            if index == 1 {
                Err("round 1 failed")
            } else {
                Ok(Fake { ratios: vec![] })
            }
        });
        assert_eq!(failed.unwrap_err(), "round 1 failed");
    }

    fn machine(cores: usize, before: f64, after: f64) -> Machine {
        Machine {
            cpu_model: "Test CPU".into(),
            cores,
            simd_path: "portable".into(),
            attnflow_matmul_gflops: Some(100.0),
            pytorch_matmul_gflops: None,
            ceiling_notes: vec!["PyTorch ceiling not measured: no python".into()],
            load_before: Some(before),
            load_after: Some(after),
        }
    }

    #[test]
    fn machine_report_warns_in_bold_above_a_quarter_per_core() {
        let quiet = machine(4, 0.5, 4.9);
        assert!(!quiet.loaded());
        let text = quiet.to_text();
        assert!(text.contains("Test CPU, 4 cores, SIMD portable"), "{text}");
        assert!(text.contains("attnflow 100, PyTorch -"), "{text}");
        assert!(
            text.contains("load average 0.50 before, 4.90 after"),
            "{text}"
        );
        assert!(text.contains("no python"), "{text}");
        assert!(!text.contains("warning"), "{text}");
        let busy = machine(4, 1.01, 1.0);
        assert!(busy.loaded());
        assert!(busy
            .to_text()
            .contains("\x1b[1mwarning: the load average exceeded"));
        assert!(
            machine(4, 0.5, 5.01).loaded(),
            "more than the bench's own threads after"
        );
    }

    #[test]
    fn measured_machine_names_this_cpu_and_its_ceiling() {
        let mut measured = Machine::measure(Some(Path::new("/nonexistent/python")));
        measured.finish();
        assert!(!measured.cpu_model.is_empty());
        assert!(measured.cores >= 1);
        assert!(measured.attnflow_matmul_gflops.unwrap() > 0.0);
        assert!(measured.pytorch_matmul_gflops.is_none());
        assert!(measured.ceiling_notes[0].contains("/nonexistent/python"));
        assert!(measured.load_before.is_some() && measured.load_after.is_some());
    }
}
