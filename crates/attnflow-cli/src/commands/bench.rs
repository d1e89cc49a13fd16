//! `attnflow bench ...`: side-by-side benchmarks against named peers.

use attnflow_data::bench::{run_bench, BenchOptions, BenchReport};
use clap::{Args, Subcommand};
use miette::miette;

use crate::commands::data::{data_error, table};
use crate::error::{CliError, CliResult};

/// Subcommands of `attnflow bench`.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Check a generated 6-column CSV with attnflow and with pandas +
    /// pandera (when installed), and print rows/s for both and the ratio.
    Data(BenchDataArgs),
    /// Time attnflow's fused attention kernel, its exact path and PyTorch's
    /// scaled_dot_product_attention (when installed), forward and
    /// forward+backward, and print GFLOP/s, ratios and peak memory.
    Attention(BenchAttentionArgs),
    /// Embed the same generated texts with attnflow and (when importable)
    /// sentence-transformers, and print texts/s for both, the ratio and how
    /// closely the embeddings agree.
    Embed(crate::commands::embed::BenchEmbedArgs),
    /// Train the same small transformer for the same steps in attnflow and
    /// (when importable) PyTorch, and print tokens/s for both and the ratio.
    Train(crate::commands::train::BenchTrainArgs),
    /// A decoder in attnflow and (when importable) transformers, rounds
    /// interleaved: prefill with every attention map kept, greedy decode.
    Generate(crate::commands::bench_generate::BenchGenerateArgs),
}

/// Arguments of `attnflow bench data`.
#[derive(Debug, Args)]
pub struct BenchDataArgs {
    /// Rows to generate.
    #[arg(long, default_value_t = 1_000_000)]
    rows: u64,
    /// Skip the run that writes the SQLite queue.
    #[arg(long)]
    no_store: bool,
    /// Skip pandera even when installed.
    #[arg(long)]
    no_pandera: bool,
    /// Write the generated CSV (and the store) into DIR and keep them,
    /// instead of a temporary directory.
    #[arg(long, value_name = "DIR")]
    keep: Option<std::path::PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Runs a `bench` subcommand.
pub fn run(command: BenchCommand) -> CliResult {
    match command {
        BenchCommand::Data(args) => data(args),
        BenchCommand::Attention(args) => attention(args),
        BenchCommand::Embed(args) => crate::commands::embed::bench(args),
        BenchCommand::Train(args) => crate::commands::train::bench(args),
        BenchCommand::Generate(args) => crate::commands::bench_generate::run(args),
    }
}

fn data(args: BenchDataArgs) -> CliResult {
    if let Some(directory) = &args.keep {
        std::fs::create_dir_all(directory)
            .map_err(|error| CliError::failed(miette!("{}: {error}", directory.display())))?;
    }
    if args.rows == 0 {
        return Err(CliError::bad_input(miette!("--rows must be at least 1")));
    }
    let report = run_bench(&BenchOptions {
        rows: args.rows,
        with_store: !args.no_store,
        pandera: !args.no_pandera,
        directory: args.keep.clone(),
        progress: !args.json,
    })
    .map_err(data_error)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report)
                .map_err(|error| CliError::failed(miette!("{error}")))?
        );
    } else {
        print_report(&report);
    }
    Ok(())
}

fn print_report(report: &BenchReport) {
    println!(
        "bench data: {} rows × 6 columns ({:.1} MB CSV), {} rows invalid on purpose",
        report.rows,
        report.file_bytes as f64 / 1e6,
        report.expected_invalid
    );
    let mut rows = vec![&report.attnflow];
    rows.extend(report.attnflow_with_store.as_ref());
    rows.extend(report.pandera.as_ref());
    let rows: Vec<Vec<String>> = rows
        .into_iter()
        .map(|engine| {
            vec![
                engine.engine.clone(),
                format!("{:.3}", engine.seconds),
                format!("{:.0}", engine.rows_per_second),
                engine.invalid_rows.to_string(),
            ]
        })
        .collect();
    print!(
        "{}",
        table(&["engine", "seconds", "rows/s", "invalid rows"], &rows)
    );
    match report.ratio {
        Some(ratio) => println!("ratio: attnflow check is {ratio:.1}× pandera (rows/s)"),
        None => println!(
            "pandera: {}",
            report.pandera_note.as_deref().unwrap_or("not run")
        ),
    }
    if let Some(peak) = report.peak_rss_bytes {
        println!(
            "peak memory of attnflow (VmHWM): {:.1} MB",
            peak as f64 / 1e6
        );
    }
}

// ---- attnflow bench attention ---------------------------------------------

/// Arguments of `attnflow bench attention`.
#[derive(Debug, Args)]
pub struct BenchAttentionArgs {
    /// Sequence lengths to time, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "512,1024,2048,4096,8192")]
    sizes: Vec<usize>,
    /// Heads.
    #[arg(long, default_value_t = 8)]
    heads: usize,
    /// Width of each head.
    #[arg(long, default_value_t = 64)]
    head_dim: usize,
    /// Batch size.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// One run per case and no warm-up (a smoke test, not a measurement).
    #[arg(long)]
    quick: bool,
    /// The Python interpreter to try for PyTorch.
    #[arg(long, default_value = "python3")]
    python: std::path::PathBuf,
    /// Skip PyTorch even when installed.
    #[arg(long)]
    no_torch: bool,
    /// Skip the exact path where it would need more memory than this, GB.
    #[arg(long, default_value_t = 4.0)]
    exact_limit_gb: f64,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Internal: run one case (given as JSON) in this process and print its
    /// measurement as JSON; the benchmark runs each case this way so that
    /// its peak memory is its own.
    #[arg(long, hide = true)]
    case: Option<String>,
}

fn attention(args: BenchAttentionArgs) -> CliResult {
    use attnflow_core::attention_bench::{run_bench, run_case_in_process, BenchConfig, Case};

    if let Some(case) = &args.case {
        let case: Case = serde_json::from_str(case)
            .map_err(|e| CliError::bad_input(miette!("--case: not a benchmark case: {e}")))?;
        let measured = run_case_in_process(&case).map_err(|e| CliError::failed(miette!("{e}")))?;
        println!(
            "{}",
            serde_json::to_string(&measured).map_err(|e| CliError::failed(miette!("{e}")))?
        );
        return Ok(());
    }
    for (flag, value) in [
        ("--heads", args.heads),
        ("--head-dim", args.head_dim),
        ("--batch", args.batch),
    ] {
        if value == 0 {
            return Err(CliError::bad_input(miette!("{flag} must be at least 1")));
        }
    }
    if args.sizes.is_empty() || args.sizes.contains(&0) {
        return Err(CliError::bad_input(miette!(
            "--sizes must list sequence lengths of at least 1, got {:?}",
            args.sizes
        )));
    }
    if !(args.exact_limit_gb.is_finite() && args.exact_limit_gb >= 0.0) {
        return Err(CliError::bad_input(miette!(
            "--exact-limit-gb must be a non-negative number, got {}",
            args.exact_limit_gb
        )));
    }
    let config = BenchConfig {
        sizes: args.sizes.clone(),
        batch: args.batch,
        heads: args.heads,
        d: args.head_dim,
        quick: args.quick,
        python: (!args.no_torch).then(|| args.python.clone()),
        exact_memory_limit: (args.exact_limit_gb * 1e9) as u64,
    };
    let executable = std::env::current_exe()
        .map_err(|e| CliError::failed(miette!("cannot find the attnflow executable: {e}")))?;
    let isolated = |case: &Case| isolated_case(&executable, case);
    let bar = if args.json {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(0).with_style(
            indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {elapsed} {msg}")
                .map_err(|e| CliError::failed(miette!("{e}")))?,
        )
    };
    let mut progress = |event: attnflow_core::attention_bench::BenchProgress| match event {
        attnflow_core::attention_bench::BenchProgress::Total(total) => bar.set_length(total),
        attnflow_core::attention_bench::BenchProgress::Case(label) => {
            if !bar.message().is_empty() {
                bar.inc(1);
            }
            bar.set_message(label);
        }
    };
    let report = run_bench(&config, &isolated, &mut progress)
        .map_err(|e| CliError::failed(miette!("{e}")))?;
    bar.finish_and_clear();
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).map_err(|e| CliError::failed(miette!("{e}")))?
        );
    } else {
        print_attention_report(&report);
    }
    Ok(())
}

/// Runs one case in a fresh `attnflow bench attention --case ...` process.
fn isolated_case(
    executable: &std::path::Path,
    case: &attnflow_core::attention_bench::Case,
) -> Result<attnflow_core::attention_bench::Measurement, attnflow_core::attention_bench::BenchError>
{
    use attnflow_core::attention_bench::BenchError;
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

fn print_attention_report(report: &attnflow_core::attention_bench::BenchReport) {
    use attnflow_core::attention_bench::{Outcome, Pass};

    println!(
        "bench attention: batch {}, {} heads, d = {}, f32, {} threads, SIMD path {}",
        report.batch, report.heads, report.d, report.threads, report.simd_path
    );
    print!(
        "matmul ceiling (f32 {size}×{size}×{size}): attnflow/gemm {:.1} GFLOP/s",
        report.matmul_gflops,
        size = report.matmul_size
    );
    match report.torch_matmul_gflops {
        Some(torch) => println!(", PyTorch {torch:.1} GFLOP/s"),
        None => println!(),
    }
    match (&report.torch_version, &report.torch_note) {
        (Some(version), _) => println!("PyTorch {version}"),
        (None, Some(reason)) => println!("PyTorch not run: {reason}"),
        (None, None) => println!("PyTorch not run"),
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
    println!("| {} |", header.join(" | "));
    println!("|{}", "---|".repeat(header.len()));
    for row in &rows {
        println!("| {} |", row.join(" | "));
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
                Outcome::Skipped { .. } if engine == "torch" && report.torch_version.is_none() => {}
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
        println!("{note}");
    }
    println!(
        "GFLOP counted as 4·n²·d per head forward, 3.5× that for forward+backward; peak MB is each case's own process (VmHWM), PyTorch's includes its interpreter."
    );
}
